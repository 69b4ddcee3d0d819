"""Tokenizer KVs as llama.cpp's converter writes them, without transformers.

* SentencePiece (``tokenizer.model`` through ``sentencepiece``): model ``llama``, pre
  ``default``, tokens/scores/types, then ``added_tokens.json`` and
  ``tokenizer_config.json``'s ``added_tokens_decoder`` overriding ids; ids up to
  config ``vocab_size`` padded as ``[PAD<id>]`` (score -10000, unused).
* BPE (``tokenizer.json`` through ``tokenizers``): model ``gpt2``, tokens in id order
  (missing ids padded), added tokens control or user-defined, merges.
* WordPiece: the BPE route, then the phantom-space rewrite, model ``bert``.
* ``tokenizer.ggml.pre`` for BPE/WordPiece: sha256 of ``str(ids)`` of the fixed check
  text encoded with special tokens, looked up in ``pretokenizers.json`` (data taken from
  llama.cpp's table; the last matching entry wins, as there). An unknown hash is an error
  naming it.
* Special ids, add_* flags, chat template and normalizer flags: ``special_kvs``.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from gguf import Keys, TokenType
from sentencepiece import SentencePieceProcessor
from tokenizers import Tokenizer

from modelkit.convert.hf_folder import HFFolder
from modelkit.convert.kvs import KVList
from modelkit.convert.special_tokens import load_special, write_special
from modelkit.errors import ConvertError

PRETOKENIZERS = Path(__file__).with_name("pretokenizers.json")
SPACE = "\u2581"


@cache
def _pre_table() -> tuple[str, dict[str, str]]:
    data = json.loads(PRETOKENIZERS.read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    for entry in data["hashes"]:
        table[entry["sha256"]] = entry["pre"]  # later entries win, as in llama.cpp
    return data["check_text"], table


def looks_special(token: str) -> bool:
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def load_tokenizer_json(folder: HFFolder) -> Tokenizer:
    path = folder.path / "tokenizer.json"
    if not path.is_file():
        raise ConvertError(f"{path}: missing (no tokenizer.model or tokenizer.json in "
                           f"{folder.path})")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise ConvertError(f"{path}: cannot load the tokenizer: {exc}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


def pre_tokenizer_hash(tok: Tokenizer) -> str:
    text, _ = _pre_table()
    ids = tok.encode(text, add_special_tokens=True).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def known_pre_tokenizers() -> list[str]:
    return sorted(set(_pre_table()[1].values()) | {"default"})


def pre_tokenizer_name(folder: HFFolder, tok: Tokenizer) -> str:
    if folder.pre is not None:
        if folder.pre not in known_pre_tokenizers():
            raise ConvertError(f"unknown pre-tokenizer {folder.pre!r} (known: "
                               f"{', '.join(known_pre_tokenizers())})")
        return folder.pre
    digest = pre_tokenizer_hash(tok)
    name = _pre_table()[1].get(digest)
    if name is None:
        raise ConvertError(f"{folder.path / 'tokenizer.json'}: BPE pre-tokenizer not "
                           f"recognized (check hash {digest}); llama.cpp does not know it "
                           "either: choose one with --pre NAME")
    return name


# ------------------------------------------------------------------ SentencePiece
def spm_tokens(folder: HFFolder, overrides: bool = True,
               ) -> tuple[list[bytes], list[float], list[int]]:
    """SentencePiece pieces padded to config ``vocab_size``, then added_tokens.json, then
    (``overrides``) tokenizer_config.json's added_tokens_decoder."""
    path = folder.path / "tokenizer.model"
    spm = SentencePieceProcessor()
    try:
        spm.LoadFromFile(str(path))
    except (OSError, RuntimeError) as exc:
        raise ConvertError(f"{path}: cannot load the SentencePiece model: {exc}") from None
    n_spm = spm.vocab_size()
    vocab_size = folder.find("vocab_size_per_layer_input", "vocab_size") or n_spm
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [int(TokenType.UNUSED)] * vocab_size
    for i in range(min(n_spm, vocab_size)):
        tokens[i] = spm.IdToPiece(i).encode("utf-8")
        scores[i] = spm.GetScore(i)
        t = TokenType.NORMAL
        if spm.IsUnknown(i):
            t = TokenType.UNKNOWN
        elif spm.IsControl(i):
            t = TokenType.CONTROL
        elif spm.IsUnused(i):
            t = TokenType.UNUSED
        elif spm.IsByte(i):
            t = TokenType.BYTE
        types[i] = int(t)
    added = folder.json_object("added_tokens.json") or {}
    for text, tid in added.items():
        if isinstance(tid, int) and 0 <= tid < vocab_size:
            tokens[tid], scores[tid], types[tid] = (text.encode("utf-8"), -1000.0,
                                                    int(TokenType.USER_DEFINED))
    config = folder.json_object("tokenizer_config.json") or {}
    decoder = (config.get("added_tokens_decoder") or {}) if overrides else {}
    for key, data in decoder.items():
        tid = int(key)
        if tid >= vocab_size or not isinstance(data, dict):
            continue
        text = str(data["content"])
        if data.get("special") or looks_special(text):
            types[tid] = int(TokenType.CONTROL)
        else:
            text = text.replace(SPACE, " ")
            types[tid] = int(TokenType.USER_DEFINED)
        scores[tid] = -1000.0
        tokens[tid] = text.encode("utf-8")
    return tokens, scores, types


def spm_vocab(folder: HFFolder, kv: KVList) -> None:
    tokens, scores, types = spm_tokens(folder)
    write_spm(folder, kv, tokens, scores, types)


def write_spm(folder: HFFolder, kv: KVList, tokens: list[bytes], scores: list[float],
              types: list[int]) -> None:
    kv.string(Keys.Tokenizer.MODEL, "llama")
    kv.string(Keys.Tokenizer.PRE, "default")
    kv.add_array(Keys.Tokenizer.LIST, tokens)
    kv.add_array(Keys.Tokenizer.SCORES, scores)
    kv.add_array(Keys.Tokenizer.TOKEN_TYPE, types)
    special_kvs(folder, kv, n_vocab=len(tokens))


# ------------------------------------------------------------------------ BPE
def _added_tokens(folder: HFFolder) -> list[dict[str, Any]]:
    data = folder.json_object("tokenizer.json") or {}
    added = data.get("added_tokens") or []
    return [a for a in added if isinstance(a, dict)]


def bpe_tokens(folder: HFFolder) -> tuple[list[str], list[int], str]:
    """llama.cpp's get_vocab_base: tokens and types in id order, and the pre name."""
    tok = load_tokenizer_json(folder)
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = folder.hparams.get("vocab_size", len(vocab))
    top = max(vocab.values(), default=-1)
    if top >= vocab_size:
        raise ConvertError(f"{folder.path / 'tokenizer.json'}: token id {top} does not fit "
                           f"the vocabulary of {vocab_size} in config.json")
    pre = pre_tokenizer_name(folder, tok)
    reverse = {i: t for t, i in vocab.items()}
    added = {int(a["id"]): a for a in _added_tokens(folder)}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        info = added.get(i)
        if info is not None and info.get("content") == token:
            if not info.get("normalized", True):
                ids = tok.encode(token, add_special_tokens=False).ids
                token = tok.decode(ids, skip_special_tokens=False)
            if info.get("special") or looks_special(token):
                types.append(int(TokenType.CONTROL))
            else:
                token = token.replace(SPACE, " ")
                types.append(int(TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))
        tokens.append(token)
    return tokens, types, pre


def gpt2_vocab(folder: HFFolder, kv: KVList) -> None:
    tokens, types, pre = bpe_tokens(folder)
    kv.string(Keys.Tokenizer.MODEL, "gpt2")
    kv.string(Keys.Tokenizer.PRE, pre)
    kv.add_array(Keys.Tokenizer.LIST, tokens)
    kv.add_array(Keys.Tokenizer.TOKEN_TYPE, types)
    special_kvs(folder, kv, n_vocab=None, load_merges=True)


def wordpiece_vocab(folder: HFFolder, kv: KVList) -> None:
    tokens, types, pre = bpe_tokens(folder)
    kv.u32(Keys.Tokenizer.TOKEN_TYPE_COUNT, folder.hparams.get("type_vocab_size", 1))
    phantom = [t if ty == TokenType.CONTROL else t[2:] if t.startswith("##") else SPACE + t
               for t, ty in zip(tokens, types, strict=True)]
    kv.string(Keys.Tokenizer.MODEL, "bert")
    kv.string(Keys.Tokenizer.PRE, pre)
    kv.add_array(Keys.Tokenizer.LIST, phantom)
    kv.add_array(Keys.Tokenizer.TOKEN_TYPE, types)
    special_kvs(folder, kv, n_vocab=len(tokens))


def special_kvs(folder: HFFolder, kv: KVList, n_vocab: int | None,
                load_merges: bool = False) -> None:
    write_special(load_special(folder, n_vocab, load_merges), kv)


# --------------------------------------------------------- llama "HF fast" vocab
def is_llama_hf(folder: HFFolder) -> bool:
    """A SentencePiece-style BPE tokenizer.json (byte fallback, Sequence decoder) that
    llama.cpp converts as a ``llama`` vocabulary (not llama-3's byte-level BPE)."""
    data = folder.json_object("tokenizer.json")
    if data is None:
        return False
    model = data.get("model") or {}
    decoder = data.get("decoder") or {}
    return (model.get("type") == "BPE" and bool(model.get("byte_fallback", False))
            and decoder.get("type") == "Sequence")


def _special_contents(folder: HFFolder) -> set[str]:
    """transformers' ``all_special_tokens``: the *_token entries of tokenizer_config.json
    (special_tokens_map.json) and additional_special_tokens."""
    found: set[str] = set()
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        cfg = folder.json_object(name) or {}
        for key, value in cfg.items():
            values = value if key == "additional_special_tokens" else [value] \
                if key.endswith("_token") else []
            for v in values if isinstance(values, list) else []:
                text = v.get("content") if isinstance(v, dict) else v
                if isinstance(text, str):
                    found.add(text)
    return found


def llama_hf_vocab(folder: HFFolder, kv: KVList) -> None:
    """llama.cpp's LlamaHfVocab: base tokens in id order (byte tokens BYTE, special ids
    CONTROL), then added tokens beyond the base; every score -1000; no padding."""
    tok = load_tokenizer_json(folder)
    base_size = tok.get_vocab_size(with_added_tokens=False)
    vocab = tok.get_vocab(with_added_tokens=True)
    reverse = {i: t for t, i in vocab.items()}
    special_ids = {vocab[t] for t in _special_contents(folder) if t in vocab}
    added = sorted((int(a["id"]), str(a["content"])) for a in _added_tokens(folder)
                   if int(a["id"]) >= base_size)
    added_ids = {i for i, _ in added}
    tokens: list[bytes] = []
    types: list[int] = []
    for i in range(base_size):
        if i in added_ids or i not in reverse:
            continue
        text = reverse[i].encode("utf-8")
        tokens.append(text)
        types.append(int(TokenType.BYTE if re.fullmatch(rb"<0x[0-9A-Fa-f]{2}>", text) else
                         TokenType.CONTROL if i in special_ids else TokenType.NORMAL))
    for i, content in added:
        tokens.append(content.encode("utf-8"))
        types.append(int(TokenType.CONTROL if i in special_ids else TokenType.USER_DEFINED))
    kv.string(Keys.Tokenizer.MODEL, "llama")
    kv.string(Keys.Tokenizer.PRE, "default")
    kv.add_array(Keys.Tokenizer.LIST, tokens)
    kv.add_array(Keys.Tokenizer.SCORES, [-1000.0] * len(tokens))
    kv.add_array(Keys.Tokenizer.TOKEN_TYPE, types)
    special_kvs(folder, kv, n_vocab=len(tokens))
