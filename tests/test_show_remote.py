"""``show`` of hub models that are not in the store: GGUF headers by range requests
through the real clients against the loopback fake hub (tests/hubserver.py), nothing
written, every byte counted; and one clear line for each way it can fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hf_fixtures import write_config, write_spm
from hubserver import TOKEN, Body, FakeRepo, HubServer
from registry_fixtures import free_port
from remote_fixtures import big_llama, huge_string_header, sparse_safetensors
from test_convert_archs import llama_config, make_llama
from test_importers import data, gguf_bytes, hub, split_files, tiny_repo  # noqa: F401

from modelkit import api, cli
from modelkit.convert import convert
from modelkit.errors import (
    GGUFError,
    HubError,
    ModelNotFoundError,
    RemoteReadError,
    UnauthorizedError,
)
from modelkit.gguf_file import read_gguf, read_gguf_bytes, read_gguf_from
from modelkit.gguf_file.reader import FIRST_READ

BIG = "Big-GGUF"


@pytest.fixture
def big(hub: HubServer) -> HubServer:  # noqa: F811
    body, _ = big_llama()
    hub.repos[f"org/{BIG}"] = FakeRepo({"README.md": b"# big\n", "Big-Q8_0.gguf": body,
                                        "template": b"{{ .Prompt }} big",
                                        "params": b'{"temperature": 0.25}'})
    return hub


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("host", ["hf.co", "modelscope.cn"])
def test_show_reads_only_the_header_of_a_1gb_model(big: HubServer, tmp_path: Path,
                                                   host: str) -> None:
    body, slots = big_llama()
    info = api.show(f"{host}/org/{BIG}:Q8_0", store=tmp_path / "models")
    assert info.remote is not None
    assert info.architecture == "llama" and info.quantization == "Q8_0"
    assert info.context_length == 4096 and info.embedding_length == 2048
    assert [t.name for t in info.tensors] == [s.name for s in slots]
    assert info.gguf.parameter_count == sum(t.n_elements for t in info.tensors)
    assert info.template == "{{ .Prompt }} big" and info.parameters == {"temperature": 0.25}
    # Every byte the fake hub served for the GGUF was counted, and that is the header
    # (plus at most the read-ahead), well under 1% of the file.
    served = big.bytes_sent("Big-Q8_0.gguf")
    assert info.bytes_read is not None and info.bytes_read >= served
    assert info.remote.size == body.size > 1_000_000_000
    assert served < body.size / 100
    local = read_gguf_from(lambda offset, n: body[offset:offset + n], body.size, "local")
    assert info.tensors == local.tensors and dict(info.gguf.metadata) == dict(local.metadata)
    # Nothing stored, and nothing in the hub clients' caches but (HF) the branch's ref.
    assert files_under(tmp_path / "models") == []
    assert files_under(tmp_path / "ms") == []
    assert [p.name for p in files_under(tmp_path / "hf")] in ([], ["main"])


def test_show_json_reports_bytes_read(big: HubServer, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "models"))
    assert cli.main(["show", "--json", f"hf.co/org/{BIG}:Q8_0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["details"]["quantization_level"] == "Q8_0"
    assert out["bytes_read"] > 0 and out["bytes_read"] * 100 < out["size"]
    assert out["files"] == ["Big-Q8_0.gguf"]
    assert cli.main(["show", "--quantization", "--json", f"hf.co/org/{BIG}:Q8_0"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["by_type"][0]["type"] == "Q8_0" and view["bytes_read"] == out["bytes_read"]


def test_show_text_sections_and_verbose(big: HubServer, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "models"))
    assert cli.main(["show", f"modelscope.cn/org/{BIG}"]) == 0
    text = capsys.readouterr().out
    assert "  Model\n" in text and "  Parameters\n" in text and "temperature" in text
    assert cli.main(["show", "-v", f"hf.co/org/{BIG}:Q8_0"]) == 0
    text = capsys.readouterr().out
    assert "blk.19.ffn_down.weight" in text and "tokenizer.ggml.tokens" in text
    assert cli.main(["show", "--template", f"hf.co/org/{BIG}:Q8_0"]) == 0
    assert capsys.readouterr().out == "{{ .Prompt }} big"


def test_same_tag_rules_as_pull(hub: HubServer, tmp_path: Path,  # noqa: F811
                                data: dict[str, bytes]) -> None:  # noqa: F811
    store = tmp_path / "models"
    latest = api.show("hf.co/TheBloke/tiny-GGUF", store=store)
    assert latest.remote is not None and latest.remote.filenames == ("Tiny-Q4_K_M.gguf",)
    q8 = api.show("hf.co/TheBloke/tiny-GGUF:q8_0", store=store)
    assert q8.remote is not None and q8.remote.filenames == ("Tiny-Q8_0.gguf",)
    assert q8.gguf.tensors == read_gguf_bytes(data["q8"], "x").tensors


def test_split_gguf_reads_every_shard(hub: HubServer, tmp_path: Path,  # noqa: F811
                                      data: dict[str, bytes]) -> None:  # noqa: F811
    shards = {k: v for k, v in data.items() if "-of-" in k}
    hub.repos["org/split-GGUF"] = FakeRepo(dict(shards))
    info = api.show("hf.co/org/split-GGUF:Q8_0", store=tmp_path / "models")
    assert info.remote is not None and len(info.remote.shards) == len(shards) > 1
    names = [t.name for s in shards.values() for t in read_gguf_bytes(s, "x").tensors]
    assert [t.name for t in info.tensors] == names
    assert not any(k.startswith("split.") for k in info.gguf.metadata)
    for shard in shards:
        assert hub.requests("GET", shard)


def test_stored_model_wins_over_the_hub(hub: HubServer, tmp_path: Path) -> None:  # noqa: F811
    store = tmp_path / "models"
    api.pull("hf.co/TheBloke/tiny-GGUF:Q8_0", store=store)
    before = len(hub.log)
    info = api.show("hf.co/TheBloke/tiny-GGUF:Q8_0", store=store)
    assert info.remote is None and info.bytes_read is None and len(hub.log) == before


# --------------------------------------------------------------------- failures
Fails = Callable[[str], tuple[int, str]]


@pytest.fixture
def fails(tmp_path: Path, capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> Fails:
    """``modelkit show NAME``: its exit code and its one line on stderr."""
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "models"))

    def run(name: str) -> tuple[int, str]:
        code = cli.main(["show", name])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("Error: ") and "Traceback" not in err
        return code, err.strip()

    return run


def test_unknown_repo(hub: HubServer, fails: Fails, tmp_path: Path) -> None:  # noqa: F811
    code, err = fails("hf.co/org/nothing-GGUF")
    assert code == 4 and "repository org/nothing-GGUF does not exist" in err
    code, err = fails("modelscope.cn/org/nothing-GGUF")
    assert code == 4 and "does not exist" in err
    with pytest.raises(ModelNotFoundError):
        api.show("hf.co/org/nothing-GGUF", store=tmp_path / "models")


def test_gated_repo(hub: HubServer, fails: Fails, tmp_path: Path,  # noqa: F811
                    data: dict[str, bytes]) -> None:  # noqa: F811
    hub.repos["org/gated-GGUF"] = tiny_repo(data, gated=True)
    code, err = fails("hf.co/org/gated-GGUF")
    assert code == 10 and "is gated" in err and "HF_TOKEN" in err
    code, err = fails("modelscope.cn/org/gated-GGUF")
    assert code == 10 and "refused access" in err
    with pytest.raises(UnauthorizedError):
        api.show("hf.co/org/gated-GGUF", store=tmp_path / "models")


def test_no_gguf_in_the_repo(hub: HubServer, fails: Fails) -> None:  # noqa: F811
    hub.repos["org/plain"] = FakeRepo({"README.md": b"hi", "model.bin": b"\0" * 10})
    code, err = fails("hf.co/org/plain")
    assert code == 4 and "has no GGUF files" in err


def test_offline_and_unreachable(hub: HubServer, fails: Fails, tmp_path: Path,  # noqa: F811
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = fails("hf.co/TheBloke/tiny-GGUF")
    assert code == 9 and "offline mode is on" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, err = fails("hf.co/TheBloke/tiny-GGUF")
    assert code == 9 and "cannot reach" in err
    with pytest.raises(HubError):
        api.show("hf.co/TheBloke/tiny-GGUF", store=tmp_path / "models")


def test_header_larger_than_the_limit(hub: HubServer, fails: Fails,  # noqa: F811
                                      tmp_path: Path) -> None:
    hub.repos["org/huge-GGUF"] = FakeRepo({"Huge-Q4_0.gguf": huge_string_header()})
    code, err = fails("hf.co/org/huge-GGUF")
    assert code == 5 and "larger than the 256 MiB limit" in err
    assert hub.bytes_sent("Huge-Q4_0.gguf") <= FIRST_READ
    with pytest.raises(GGUFError):
        api.show("hf.co/org/huge-GGUF", store=tmp_path / "models")


def test_server_that_ignores_range(big: HubServer, fails: Fails, tmp_path: Path) -> None:
    big.ignore_range = True
    for host in ("hf.co", "modelscope.cn"):
        code, err = fails(f"{host}/org/{BIG}:Q8_0")
        assert code == 1 and "ignored the Range request" in err, err
        assert f"stopped after {FIRST_READ} bytes" in err
    with pytest.raises(RemoteReadError):
        api.show(f"hf.co/org/{BIG}:Q8_0", store=tmp_path / "models")
    # The server meant to send the whole gigabyte; the client hung up after 1 MiB.
    assert big.bytes_sent("Big-Q8_0.gguf") < 3 * 64 << 20


# ------------------------------------------------------------- safetensors repos
def _llama_shapes(n_layer: int, n_embd: int, n_ff: int, n_head: int, n_kv: int,
                  n_vocab: int) -> dict[str, tuple[int, ...]]:
    hd = n_embd // n_head
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (n_vocab, n_embd),
                                          "model.norm.weight": (n_embd,),
                                          "lm_head.weight": (n_vocab, n_embd)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (n_embd,),
                       p + "post_attention_layernorm.weight": (n_embd,),
                       p + "self_attn.q_proj.weight": (n_head * hd, n_embd),
                       p + "self_attn.k_proj.weight": (n_kv * hd, n_embd),
                       p + "self_attn.v_proj.weight": (n_kv * hd, n_embd),
                       p + "self_attn.o_proj.weight": (n_embd, n_head * hd),
                       p + "mlp.gate_proj.weight": (n_ff, n_embd),
                       p + "mlp.up_proj.weight": (n_ff, n_embd),
                       p + "mlp.down_proj.weight": (n_embd, n_ff)})
    return shapes


def test_safetensors_repo_shows_what_convert_gives(hub: HubServer, tmp_path: Path,  # noqa: F811
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "Tiny-Llama"
    make_llama(src)
    hub.repos["acme/Tiny-Llama"] = FakeRepo({
        p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()})
    info = api.show("hf.co/acme/Tiny-Llama", store=tmp_path / "models")
    converted = tmp_path / "c.gguf"
    convert(src, converted, "auto")
    local = read_gguf(converted)
    assert info.remote is not None and info.remote.conversion is not None
    assert info.tensors == local.tensors
    assert {k: local.metadata[k] for k in local.metadata} == dict(info.gguf.metadata)
    assert info.quantization == "F16"  # auto keeps the F16 weights' type
    assert info.remote.conversion.sizes["f16"] == converted.stat().st_size
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "models"))
    assert cli.main(["show", "hf.co/acme/Tiny-Llama"]) == 0
    text = capsys.readouterr().out
    assert "Converts to GGUF" in text and "LlamaForCausalLM" in text and "size q8_0" in text
    assert files_under(tmp_path / "models") == []


def test_1gb_safetensors_repo_reads_under_one_percent(hub: HubServer,  # noqa: F811
                                                      tmp_path: Path) -> None:
    dims = {"n_layer": 12, "n_embd": 2048, "n_ff": 5632, "n_head": 16, "n_kv": 4}
    src = tmp_path / "Big-Llama"
    write_config(src, llama_config(
        hidden_size=dims["n_embd"], intermediate_size=dims["n_ff"],
        num_attention_heads=dims["n_head"], num_key_value_heads=dims["n_kv"],
        num_hidden_layers=dims["n_layer"]))
    write_spm(src)
    files: dict[str, Body] = {p.name: p.read_bytes() for p in src.iterdir()}
    weights = sparse_safetensors(_llama_shapes(n_vocab=300, **dims))
    files["model.safetensors"] = weights
    hub.repos["acme/Big-Llama"] = FakeRepo(files)
    info = api.show("hf.co/acme/Big-Llama", store=tmp_path / "models")
    assert info.remote is not None and info.remote.size > weights.size > 1_000_000_000
    assert info.gguf.metadata["llama.block_count"] == dims["n_layer"]
    assert info.quantization == "BF16"
    assert info.bytes_read is not None and info.bytes_read < info.remote.size / 100
    assert hub.bytes_sent("model.safetensors") <= FIRST_READ


def test_memory_of_a_remote_model(big: HubServer, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "models"))
    assert cli.main(["show", "--memory", "--ctx", "8192", "--json",
                     f"hf.co/org/{BIG}:Q8_0"]) == 0
    out = json.loads(capsys.readouterr().out)
    _, slots = big_llama()
    assert out["memory"]["weights"] == sum(s.n_bytes for s in slots)
    # 20 layers, 4 KV heads of 128, 8192 f16 cells, K and V
    assert out["memory"]["kv_cache"] == 20 * 2 * 4 * 128 * 8192 * 2
    assert out["bytes_read"] * 100 < out["size"]


def test_cdn_redirect_gets_no_token(big: HubServer, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    big.cdn = True
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    info = api.show(f"hf.co/org/{BIG}:Q8_0", store=tmp_path / "models")
    assert info.remote is not None and len(info.tensors) > 100
    hub_gets = big.requests("GET", "/resolve/")
    cdn_gets = big.requests("GET", "/cdn/")
    assert hub_gets and cdn_gets and all(r["range"] for r in cdn_gets)
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub_gets)
    assert all(r["auth"] is None for r in cdn_gets)
