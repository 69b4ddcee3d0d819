"""Tests for modelkit.names: model names (Ollama's types/model rules) and digests."""

from __future__ import annotations

import dataclasses
import os
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelkit.errors import DigestError, InvalidNameError
from modelkit.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    Digest,
    ModelName,
    is_valid_name,
    is_valid_part,
)

P80 = "8" * 80
P350 = "3" * 350
HEX = "1" + "0" * 63
HEX2 = "89a2116c" + "ab" * 28

# --------------------------------------------------------------------------- good names

# input -> (host, namespace, model, tag, display_shortest)
GOOD = {
    "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K": (
        "registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K",
        "dolphin-mistral:7b-v2.6-dpo-laser-q6_K"),
    "scheme://host:port/namespace/model:tag": (
        "host:port", "namespace", "model", "tag", "host:port/namespace/model:tag"),
    "host/namespace/model:tag": (
        "host", "namespace", "model", "tag", "host/namespace/model:tag"),
    "host:port/namespace/model:tag": (
        "host:port", "namespace", "model", "tag", "host:port/namespace/model:tag"),
    "host/namespace/model": (
        "host", "namespace", "model", "latest", "host/namespace/model:latest"),
    "host:port/namespace/model": (
        "host:port", "namespace", "model", "latest", "host:port/namespace/model:latest"),
    "namespace/model": (
        DEFAULT_HOST, "namespace", "model", "latest", "namespace/model:latest"),
    "model": (DEFAULT_HOST, "library", "model", "latest", "model:latest"),
    "m": (DEFAULT_HOST, "library", "m", "latest", "m:latest"),
    "xx": (DEFAULT_HOST, "library", "xx", "latest", "xx:latest"),
    "h/n/m": ("h", "n", "m", "latest", "h/n/m:latest"),
    "h/n/m:t": ("h", "n", "m", "t", "h/n/m:t"),
    "h/nn/mm:t": ("h", "nn", "mm", "t", "h/nn/mm:t"),
    "_why/_the/_lucky:_stiff": ("_why", "_the", "_lucky", "_stiff", "_why/_the/_lucky:_stiff"),
    f"{P80}/{P80}/{P80}:{P80}": (P80, P80, P80, P80, f"{P80}/{P80}/{P80}:{P80}"),
    f"{P350}/{P80}/{P80}:{P80}": (P350, P80, P80, P80, f"{P350}/{P80}/{P80}:{P80}"),
    "host:https/namespace/model:tag": (
        "host:https", "namespace", "model", "tag", "host:https/namespace/model:tag"),
    "registry.ollama.ai/library/model:latest": (
        DEFAULT_HOST, "library", "model", "latest", "model:latest"),
    "registry.ollama.ai/library/model:tag": (
        DEFAULT_HOST, "library", "model", "tag", "model:tag"),
    "registry.ollama.ai/namespace/model:tag": (
        DEFAULT_HOST, "namespace", "model", "tag", "namespace/model:tag"),
    "host/library/model:tag": ("host", "library", "model", "tag", "host/library/model:tag"),
    # defaults compared case-insensitively; the name keeps its case
    "Registry.Ollama.AI/Library/Llama3.2:Latest": (
        "Registry.Ollama.AI", "Library", "Llama3.2", "Latest", "Llama3.2:Latest"),
    "REGISTRY.OLLAMA.AI/Team/M:T": ("REGISTRY.OLLAMA.AI", "Team", "M", "T", "Team/M:T"),
    "llama3.2": (DEFAULT_HOST, "library", "llama3.2", "latest", "llama3.2:latest"),
    "llama3.2:1b-instruct-q4_K_M": (
        DEFAULT_HOST, "library", "llama3.2", "1b-instruct-q4_K_M",
        "llama3.2:1b-instruct-q4_K_M"),
    "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M": (
        "hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
    "modelscope.cn/Qwen/Qwen2.5-0.5B-Instruct-GGUF": (
        "modelscope.cn", "Qwen", "Qwen2.5-0.5B-Instruct-GGUF", "latest",
        "modelscope.cn/Qwen/Qwen2.5-0.5B-Instruct-GGUF:latest"),
    "localhost:5000/team/liang-ai:v1": (
        "localhost:5000", "team", "liang-ai", "v1", "localhost:5000/team/liang-ai:v1"),
    "https://localhost:5000/team/liang-ai:v1": (
        "localhost:5000", "team", "liang-ai", "v1", "localhost:5000/team/liang-ai:v1"),
    "http://localhost:5000/team/liang-ai": (
        "localhost:5000", "team", "liang-ai", "latest", "localhost:5000/team/liang-ai:latest"),
    "a./b/c:d": ("a.", "b", "c", "d", "a./b/c:d"),  # host may end with '.'
    "m:cloud": (DEFAULT_HOST, "library", "m", "cloud", "m:cloud"),  # no cloud handling
    "m.:t.": (DEFAULT_HOST, "library", "m.", "t.", "m.:t."),
    "0/0/0:0": ("0", "0", "0", "0", "0/0/0:0"),
    "m:" + P80: (DEFAULT_HOST, "library", "m", P80, "m:" + P80),
}


@pytest.mark.parametrize("text", list(GOOD), ids=lambda s: s[:60])
def test_parse_good(text: str) -> None:
    host, namespace, model, tag, shortest = GOOD[text]
    n = ModelName.parse(text)
    assert (n.host, n.namespace, n.model, n.tag) == (host, namespace, model, tag)
    assert n.filepath_parts() == (host, namespace, model, tag)
    assert str(n) == f"{host}/{namespace}/{model}:{tag}"
    assert n.display_shortest() == shortest
    assert n.repository == f"{namespace}/{model}"
    assert is_valid_name(text)
    assert ModelName.is_valid(text)
    # round trips
    assert ModelName.parse(str(n)) == n
    # the short form drops the defaults; re-parsing spells them in lowercase
    assert ModelName.parse(n.display_shortest()).casefold_key() == n.casefold_key()
    assert ModelName.from_filepath_parts(n.filepath_parts()) == n


@pytest.mark.parametrize(
    "text",
    ["_why/_the/_lucky:_stiff", "h/n/m:t", "host/namespace/model:tag", "h/nn/mm:t",
     f"{P80}/{P80}/{P80}:{P80}", f"{P350}/{P80}/{P80}:{P80}",
     "host:https/namespace/model:tag", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"],
)
def test_fully_qualified_string_round_trip(text: str) -> None:
    assert str(ModelName.parse(text)) == text


def test_default_fill() -> None:
    assert str(ModelName.parse("xx")) == "registry.ollama.ai/library/xx:latest"
    assert (DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG) == (
        "registry.ollama.ai", "library", "latest")


# --------------------------------------------------------------------------- bad names

# input -> substring of the reason
BAD = {
    "": "empty model",
    "^": "model '^' must start",
    "mm:": "empty tag",
    "n/m:": "empty tag",
    "/nn/mm": "empty host",
    "//": "empty",
    "//mm": "empty",
    "hh//": "empty namespace",
    "//mm:@": "empty",
    "00@": "'@digest' references are not supported",
    "@": "must start",
    "@t": "must start",
    "m@d": "'@digest' references are not supported",
    "model@sha256:" + HEX: "'@digest'",
    "h/n/m:t@sha256-" + HEX: "'@digest'",
    "-hh/nn/mm:tt": "host '-hh' must start",
    "hh/-nn/mm:tt": "namespace '-nn' must start",
    "hh/nn/-mm:tt": "model '-mm' must start",
    "hh/nn/mm:-tt": "tag '-tt' must start",
    "host/name:space/model:tag": "contains ':', which only separates the tag",
    "a/b/c/d": "too many '/'",
    "a/b/c/d:e": "too many '/'",
    "hf.co/first.last/repo": "namespace 'first.last' contains '.'",
    "..": "model '..' must start",
    ".": "model '.' must start",
    "../../etc/passwd": "too many '/'",
    "h/n/..:t": "model '..' must start",
    "h/n/m:..": "tag '..' must start",
    "h/../m:t": "namespace '..' must start",
    "../n/m:t": "host '..' must start",
    "/etc/passwd": "empty host",
    "/abs/ns/m:t": "too many '/'",
    "m:.hidden": "tag '.hidden' must start",
    ".hidden": "must start",
    "h/n/m:t\\x": "contains '\\\\'",
    "h\\n/m": "contains '\\\\'",
    "m\x00": "contains '\\x00'",
    "m:t\n": "contains '\\n'",
    "mödel": "non-ASCII",
    "h/n/m:tág": "non-ASCII",
    "m o": "contains ' '",
    " m": "must start",
    "m:" + "8" * 81: "tag is 81 characters long (at most 80)",
    "8" * 81: "model is 81 characters long",
    "n" * 81 + "/m": "namespace is 81",
    "3" * 351 + "/n/m:t": "host is 351 characters long (at most 350)",
    "https://m": "scheme",
    "https://n/m": "scheme",
    "://h/n/m:t": "invalid scheme",
    "1http://h/n/m:t": "invalid scheme",
    "../..://h/n/m:t": "invalid scheme",
    "x://y://h/n/m:t": "host 'y://h' contains '://'",
    "h/n/m:a:b": "contains ':', which only separates the tag",
    "h/n/m:a/b": "too many '/'",
}


@pytest.mark.parametrize("text", list(BAD), ids=lambda s: repr(s)[:60])
def test_parse_bad(text: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        ModelName.parse(text)
    message = str(info.value)
    assert message.startswith("invalid model name: ")
    assert BAD[text] in message
    assert "\n" not in message and "\x00" not in message
    assert not is_valid_name(text)
    assert not ModelName.is_valid(text)


def test_error_message_shape() -> None:
    with pytest.raises(InvalidNameError) as info:
        ModelName.parse("hh/-nn/mm:tt")
    assert str(info.value) == (
        "invalid model name: hh/-nn/mm:tt "
        "(namespace '-nn' must start with a letter, digit or '_')")
    assert info.value.name == "hh/-nn/mm:tt"  # type: ignore[attr-defined]


def test_parse_rejects_non_str() -> None:
    with pytest.raises(InvalidNameError):
        ModelName.parse(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parts


@pytest.mark.parametrize(
    ("kind", "value", "valid"),
    [
        ("host", "", False),
        ("host", "a", True),
        ("host", "a.", True),
        ("host", "a.b", True),
        ("host", "a:123", True),
        ("host", "a:123/aa/bb", False),
        ("host", P350, True),
        ("host", P350 + "3", False),
        ("namespace", "bb", True),
        ("namespace", "a.", False),
        ("namespace", "a:b", False),
        ("namespace", "a/b", False),
        ("namespace", "a/b:c/d@sha256-100", False),
        ("namespace", "himynameisjoe", True),
        ("namespace", "himynameisreallyreallyreallyreallylongbutitshouldstillbevalid", True),
        ("namespace", P80, True),
        ("namespace", P80 + "8", False),
        ("model", "-h", False),
        ("model", "_h", True),
        ("model", "a.b-c_d", True),
        ("model", "a:b", False),
        ("tag", "Q4_K_M", True),
        ("tag", ".x", False),
        ("tag", "x.", True),
    ],
)
def test_is_valid_part(kind: str, value: str, valid: bool) -> None:
    assert is_valid_part(kind, value) is valid


def test_is_valid_part_unknown_kind() -> None:
    with pytest.raises(ValueError):
        is_valid_part("digest", "x")


# --------------------------------------------------------------------------- construction


def test_constructor_validates() -> None:
    assert ModelName("h", "n", "m", "t") == ModelName.parse("h/n/m:t")
    for parts in [("..", "n", "m", "t"), ("h", "", "m", "t"), ("h", "n", "a/b", "t"),
                  ("h", "n", "m", "/etc"), ("h", "n.x", "m", "t")]:
        with pytest.raises(InvalidNameError):
            ModelName(*parts)
    with pytest.raises(InvalidNameError):
        ModelName("h", "n", "m", "t", scheme="ftp")
    n = ModelName.parse("h/n/m:t")
    with pytest.raises(InvalidNameError):
        dataclasses.replace(n, tag="..")
    assert dataclasses.replace(n, tag="v2").tag == "v2"


def test_scheme() -> None:
    assert ModelName.parse("m").scheme == "https"
    assert ModelName.parse("h/n/m").scheme == "https"
    assert ModelName.parse("https://h/n/m").scheme == "https"
    assert ModelName.parse("http://h/n/m").scheme == "http"
    assert ModelName.parse("HTTP://h/n/m").scheme == "http"
    assert ModelName.parse("scheme://h/n/m").scheme == "https"
    # scheme is not part of the identity
    a, b = ModelName.parse("http://h/n/m:t"), ModelName.parse("h/n/m:t")
    assert a == b and hash(a) == hash(b)
    assert str(a) == "h/n/m:t"
    assert ModelName.parse(str(a)) == a


def test_case_preserved_and_casefold_key() -> None:
    a = ModelName.parse("Hf.Co/Bartowski/Llama:Q4_K_M")
    b = ModelName.parse("hf.co/bartowski/llama:q4_k_m")
    assert a != b
    assert a.filepath_parts() == ("Hf.Co", "Bartowski", "Llama", "Q4_K_M")
    assert a.casefold_key() == b.casefold_key() == ("hf.co", "bartowski", "llama", "q4_k_m")
    assert ModelName.parse("Llama3").casefold_key() == (
        "registry.ollama.ai", "library", "llama3", "latest")


def test_hashable_and_frozen() -> None:
    n = ModelName.parse("m")
    assert {n, ModelName.parse("registry.ollama.ai/library/m:latest")} == {n}
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.tag = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- filepath


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("host", "namespace", "model", "tag"), ("host", "namespace", "model", "tag")),
        (("host:port", "namespace", "model", "tag"), ("host:port", "namespace", "model", "tag")),
        (("registry.ollama.ai", "library", "llama3.2", "latest"),
         ("registry.ollama.ai", "library", "llama3.2", "latest")),
        (["namespace", "model", "tag"], None),
        (["model", "tag"], None),
        (["model"], None),
        ([], None),
        (["..", "..", "model", "tag"], None),
        (["", "namespace", ".", "tag"], None),
        ([".", ".", ".", "."], None),
        (["", "path", "to", "random", "file"], None),
        (["h", "n", "m", "t", "extra"], None),
        (["h", "n", "m", ".hidden"], None),
        (["h", "n", "m", ".DS_Store"], None),
        (["h", "n", ".hidden", "t"], None),
        (["h", "n", "m", "t~"], None),
        (["h", "n", "m", "t.swp"], ("h", "n", "m", "t.swp")),  # valid tag, as in Ollama
        (["h", "n.x", "m", "t"], None),
        (["h", "n", "m", "tmp-" + "x" * 80], None),
    ],
)
def test_from_filepath_parts(parts: list[str], expected: tuple[str, ...] | None) -> None:
    n = ModelName.from_filepath_parts(parts)
    if expected is None:
        assert n is None
    else:
        assert n is not None and n.filepath_parts() == expected
        assert n.scheme == "https"


def test_from_filepath_parts_string_path() -> None:
    n = ModelName.from_filepath_parts(os.path.join("host", "ns", "model", "tag"))
    assert n == ModelName("host", "ns", "model", "tag")
    assert ModelName.from_filepath_parts(os.path.join("ns", "model", "tag")) is None
    assert ModelName.from_filepath_parts("abcd") is None  # not four characters!
    assert ModelName.from_filepath_parts(os.path.join("/", "a", "b", "c", "d")) is None


# --------------------------------------------------------------------------- safety


def _check_safe(n: ModelName) -> None:
    root = "/models/manifests"
    for part in n.filepath_parts():
        assert part not in ("", ".", "..")
        assert os.sep not in part and "/" not in part and "\\" not in part
        assert "\x00" not in part
        assert not os.path.isabs(part)
        assert part.isascii() and part.isprintable()
    joined = posixpath.normpath(posixpath.join(root, *n.filepath_parts()))
    assert joined.startswith(root + "/")
    assert joined == root + "/" + "/".join(n.filepath_parts())
    osjoined = os.path.normpath(os.path.join(root, *n.filepath_parts()))
    assert os.path.commonpath([osjoined, os.path.normpath(root)]) == os.path.normpath(root)


_NAMEISH = st.text(alphabet=st.sampled_from("ab_-.:/@\\ 0Z.\x00é"), max_size=30)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=60), _NAMEISH))
def test_arbitrary_text_is_rejected_or_safe(text: str) -> None:
    try:
        n = ModelName.parse(text)
    except InvalidNameError:
        return
    _check_safe(n)
    assert ModelName.parse(str(n)) == n
    assert ModelName.from_filepath_parts(n.filepath_parts()) == n


@settings(max_examples=300)
@given(st.lists(st.one_of(st.text(max_size=12), _NAMEISH), min_size=0, max_size=6))
def test_arbitrary_filepath_parts_are_none_or_safe(parts: list[str]) -> None:
    n = ModelName.from_filepath_parts(parts)
    if n is not None:
        assert list(n.filepath_parts()) == parts
        _check_safe(n)


_PART = st.text(alphabet="abcXYZ019_", min_size=1, max_size=3).flatmap(
    lambda first: st.text(alphabet="abcXYZ019_-.", max_size=8).map(lambda rest: first + rest))


@settings(max_examples=300)
@given(_PART.filter(lambda s: "." not in s), _PART.filter(lambda s: "." not in s),
       _PART, _PART)
def test_valid_parts_round_trip(host: str, namespace: str, model: str, tag: str) -> None:
    text = f"{host}/{namespace}/{model}:{tag}"
    n = ModelName.parse(text)
    assert n.filepath_parts() == (host, namespace, model, tag)
    assert str(n) == text
    assert ModelName.parse(n.display_shortest()) == n
    _check_safe(n)


# --------------------------------------------------------------------------- digests

GOOD_DIGESTS = {
    "sha256:" + HEX: HEX,
    "sha256-" + HEX: HEX,
    "sha256:" + HEX2: HEX2,
    "sha256-" + HEX2.upper(): HEX2,
    "sha256:" + "AbCdEf" * 10 + "0123": ("abcdef" * 10 + "0123"),
}


@pytest.mark.parametrize("text", list(GOOD_DIGESTS))
def test_digest_parse_good(text: str) -> None:
    d = Digest.parse(text)
    hexpart = GOOD_DIGESTS[text]
    assert d == Digest("sha256", hexpart)
    assert d.algorithm == "sha256" and d.hex == hexpart
    assert str(d) == "sha256:" + hexpart
    assert d.filename == "sha256-" + hexpart
    assert d.short() == hexpart[:12]
    assert Digest.parse(str(d)) == d
    assert Digest.parse(d.filename) == d
    assert Digest.from_filename(d.filename) == d


BAD_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    "sha256-",
    "sha256:123",
    "sha256-100",
    "sha256:" + HEX + "0",
    "sha256:" + HEX[:-1],
    "sha256:" + HEX[:-1] + "g",
    "sha256_" + HEX,
    "sha256::" + HEX,
    "SHA256:" + HEX,
    "sha512:" + HEX,
    "md5:" + HEX,
    HEX,
    " sha256:" + HEX,
    "sha256:" + HEX + "\n",
    "sha256:" + HEX + " ",
    "@sha256:" + HEX,
    "sha256:" + HEX[:-1] + "\u0661",  # non-ASCII digit
]


@pytest.mark.parametrize("text", BAD_DIGESTS, ids=lambda s: repr(s)[:40])
def test_digest_parse_bad(text: str) -> None:
    with pytest.raises(DigestError) as info:
        Digest.parse(text)
    assert str(info.value).startswith("invalid digest format: ")
    assert "\n" not in str(info.value)


def test_digest_error_text() -> None:
    with pytest.raises(DigestError, match=r"^invalid digest format: sha256:123$"):
        Digest.parse("sha256:123")


@pytest.mark.parametrize(
    "name",
    [
        "sha256-" + HEX.upper().replace("1", "A"),   # uppercase hex is not canonical
        "sha256:" + HEX,                              # legacy colon name
        "sha256-" + HEX + "-partial",
        "sha256-" + HEX + "-partial-0",
        "sha256-" + HEX[:-1],
        "sha256-123456789",                           # temp file
        "sha256-" + HEX + ".tmp",
        ".sha256-" + HEX,
        "",
        "README",
        "sha512-" + HEX,
    ],
)
def test_digest_from_filename_rejects(name: str) -> None:
    assert Digest.from_filename(name) is None


def test_digest_constructor_validates() -> None:
    for algorithm, hexpart in [("sha256", HEX2.upper()), ("sha512", HEX), ("sha256", HEX[:-1]),
                               ("sha256", "../" + HEX[3:])]:
        with pytest.raises(DigestError):
            Digest(algorithm, hexpart)


def test_digest_order_and_hash() -> None:
    a, b = Digest("sha256", "0" * 64), Digest("sha256", "f" * 64)
    assert a < b and sorted([b, a]) == [a, b]
    assert {a, Digest.parse("sha256-" + "0" * 64)} == {a}


def test_digest_of() -> None:
    d = Digest.of(b"")
    assert str(d) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert d.short() == "e3b0c44298fc"
