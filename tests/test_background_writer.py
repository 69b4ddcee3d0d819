"""The converter's output side: pieces hashed and written in threads, to a regular
file with O_DIRECT through an aligned staging buffer (plain writes elsewhere)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest

from modelkit.convert import background_writer
from modelkit.convert.background_writer import BackgroundWriter, DirectFileWriter


def _pieces(seed: int) -> list[bytes]:
    """Pieces of awkward sizes: empty, tiny, unaligned, several stage buffers long."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 4095, 4096, 4097, 3 * 4096 + 17, 0, 70_001, 5, 40_000]
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("stage", [4096, 3 * 4096])
def test_file_gets_every_byte_in_order(stage: int, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background_writer, "_STAGE_BYTES", stage)
    pieces = _pieces(stage)
    path = tmp_path / "out.bin"
    with open(path, "wb") as f:
        f.write(b"h" * 8192)  # an aligned start after earlier plain writes
        assert DirectFileWriter.usable(f)
        with BackgroundWriter(f) as out:
            for p in pieces:
                out.put(p)
            digest = out.finish()
        assert f.tell() == 8192 + sum(map(len, pieces))
        f.write(b"tail")  # the file object is usable and positioned after the data
    want = b"".join(pieces)
    assert path.read_bytes() == b"h" * 8192 + want + b"tail"
    assert digest == hashlib.sha256(want).hexdigest()


def test_unaligned_start_and_non_files_get_plain_writes(tmp_path: Path) -> None:
    with open(tmp_path / "o.bin", "wb") as f:
        f.write(b"x")
        assert not DirectFileWriter.usable(f)
    assert not DirectFileWriter.usable(io.BytesIO())
    buf = io.BytesIO()
    with BackgroundWriter(buf) as out:
        for p in _pieces(1):
            out.put(p)
        out.finish()
    assert buf.getvalue() == b"".join(_pieces(1))


def test_a_refused_direct_write_falls_back(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that takes the O_DIRECT flag but refuses the write (EINVAL) gets
    the same bytes through plain writes."""
    import fcntl
    real = os.pwrite

    def picky(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(background_writer, "_STAGE_BYTES", 4096)
    monkeypatch.setattr(os, "pwrite", picky)
    path = tmp_path / "o.bin"
    with open(path, "wb") as f, BackgroundWriter(f) as out:
        for p in _pieces(2):
            out.put(p)
        out.finish()
        assert not fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_DIRECT
    assert path.read_bytes() == b"".join(_pieces(2))


def test_a_file_system_refusing_the_flag_gets_plain_writes(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    import fcntl
    real = fcntl.fcntl

    def no_direct(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    path = tmp_path / "o.bin"
    with open(path, "wb") as f, BackgroundWriter(f) as out:
        for p in _pieces(5):
            out.put(p)
        out.finish()
    assert path.read_bytes() == b"".join(_pieces(5))


def test_a_failing_disk_is_raised_and_the_flags_restored(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    import fcntl

    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(background_writer, "_STAGE_BYTES", 4096)
    monkeypatch.setattr(os, "pwrite", full)
    with open(tmp_path / "o.bin", "wb") as f:
        with pytest.raises(OSError, match="No space left"), BackgroundWriter(f) as out:
            for p in _pieces(3):
                out.put(p)
            out.finish()
        assert not fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_DIRECT


def test_after_runs_once_everything_before_it_is_written_and_hashed() -> None:
    import time

    class Slow(io.BytesIO):
        def write(self, data: object, /) -> int:
            time.sleep(0.01)
            return super().write(data)  # type: ignore[arg-type]

    buf = Slow()
    seen: list[int] = []
    pieces = _pieces(4)
    with BackgroundWriter(buf) as out:
        for p in pieces:
            out.put(p)
        out.after(lambda: seen.append(len(buf.getvalue())))
        out.put(b"later")
        digest = out.finish()
    assert seen == [sum(map(len, pieces))]
    assert digest == hashlib.sha256(b"".join(pieces) + b"later").hexdigest()
