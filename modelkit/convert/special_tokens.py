"""Special token ids, add_* flags, merges, chat template and normalizer flags, as
gguf-py's SpecialVocab decides them (see docs/convert.md).

Order of decisions: tokenizer.json (merges, normalizer, the post-processor's add_*
flags), tokenizer_config.json (chat template, add_<t>_token, <t>_token resolved through
tokenizer.json's added_tokens), then config.json ``<t>_token_id`` for types still unset.
KVs are written: merges, ids in decision order, add flags, chat template, normalizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import Keys

from modelkit.convert.hf_folder import HFFolder
from modelkit.convert.kvs import KVList

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# GGUF key for each special token type; types without one (cls, ...) are skipped.
SPECIAL_KEYS = {"bos": Keys.Tokenizer.BOS_ID, "eos": Keys.Tokenizer.EOS_ID,
                "unk": Keys.Tokenizer.UNK_ID, "sep": Keys.Tokenizer.SEP_ID,
                "pad": Keys.Tokenizer.PAD_ID, "mask": Keys.Tokenizer.MASK_ID,
                "eot": Keys.Tokenizer.EOT_ID, "eom": Keys.Tokenizer.EOM_ID}
ADD_KEYS = {"bos": Keys.Tokenizer.ADD_BOS, "eos": Keys.Tokenizer.ADD_EOS,
            "sep": Keys.Tokenizer.ADD_SEP}


@dataclass
class SpecialVocab:
    n_vocab: int | None
    types: tuple[str, ...] = SPECIAL_TYPES
    ids: dict[str, int] = field(default_factory=dict)
    add: dict[str, bool] = field(default_factory=dict)
    merges: list[str] = field(default_factory=list)
    chat_template: Any = None
    lowercase: bool | None = None
    strip_accents: bool | None = None

    def set_id(self, typ: str, tid: Any) -> None:
        if not isinstance(tid, int) or isinstance(tid, bool) or tid < 0:
            return
        if (self.n_vocab is None or tid < self.n_vocab) and typ not in self.ids:
            self.ids[typ] = tid

    def normalizer(self, norm: dict[str, Any]) -> None:
        kind = norm.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            if "lowercase" in norm:
                self.lowercase = norm["lowercase"]
            if "strip_accents" in norm:
                self.strip_accents = norm["strip_accents"]
        elif kind == "Sequence":
            for sub in norm.get("normalizers", []):
                if isinstance(sub, dict):
                    self.normalizer(sub)


def _tok_id(entry: Any) -> Any:
    return entry.get("SpecialToken", {}).get("id") if isinstance(entry, dict) else None


def _post_processor(sv: SpecialVocab, pp: dict[str, Any], cfg: dict[str, Any] | None) -> None:
    """The add_* flags (and bos/eos corrections) a tokenizer.json post-processor implies."""
    c = cfg or {}
    bos, cls_, eos, sep = (c.get("bos_token"), c.get("cls_token"), c.get("eos_token"),
                           c.get("sep_token"))
    for proc in pp.get("processors", [pp]):
        kind = proc.get("type")
        if kind == "ByteLevel":
            sv.add.setdefault("bos", False)
            sv.add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            sv.add.update(bos=True, eos=True, sep=True)
            if not cls_ and cfg:
                cls_ = cfg["cls_token"] = proc.get("cls", [bos])[0]
            if not sep and cfg:
                sep = cfg["sep_token"] = proc.get("sep", [eos])[0]
        elif kind == "TemplateProcessing":
            single, pair = proc.get("single", []), proc.get("pair", [])
            first = last = None
            if len(single) > 1:
                if first := _tok_id(single[0]):
                    if not cfg:
                        bos = first
                    elif first not in (bos, cls_):
                        if not bos:
                            bos = cfg["bos_token"] = first
                        if not cls_:
                            cls_ = cfg["cls_token"] = first
                    sv.add["bos"] = first in (bos, cls_)
                if last := _tok_id(single[-1]):
                    if not cfg:
                        eos = last
                    elif last != eos:
                        if "eot" not in sv.types:
                            sv.types += ("eot",)
                            cfg["eot_token"] = eos
                        elif "eom" not in sv.types:
                            sv.types += ("eom",)
                            cfg["eom_token"] = eos
                        eos = cfg["eos_token"] = last
                    sv.add["eos"] = last == eos
            if pair:
                start = 1 if first and _tok_id(pair[0]) == first else 0
                stop = -1 if last and _tok_id(pair[-1]) == last else None
                middle = pair[slice(start, stop)]
                if middle:
                    a = middle[0].get("Sequence", {}).get("id")
                    b = middle[-1].get("Sequence", {}).get("id")
                    if a == "A" and b == "B" and (middle := middle[1:-1]):
                        add_sep = False
                        entry = _tok_id(middle[0])
                        if entry and entry in (sep, eos) and not last:
                            add_sep = True
                        if len(middle) == 2 and (entry := _tok_id(middle[1])):
                            if entry in (sep, eos):
                                add_sep = True
                        sv.add["sep"] = add_sep
                        if add_sep and not sep and cfg:
                            cfg["sep_token"] = eos


def _chat_template(path: Path, cfg: dict[str, Any]) -> Any:
    alt: Any = None
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        alt = jinja.read_text(encoding="utf-8")
        extra = sorted((path / "additional_chat_templates").glob("*.jinja"))
        if extra:
            alt = [{"name": "default", "template": alt}] + [
                {"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra]
    elif (path / "chat_template.json").is_file():
        alt = json.loads((path / "chat_template.json").read_text(encoding="utf-8")).get(
            "chat_template")
    template = cfg.get("chat_template", alt)
    return template if template is None or isinstance(template, (str, list)) else None


def load_special(folder: HFFolder, n_vocab: int | None, load_merges: bool,
                 types: tuple[str, ...] = SPECIAL_TYPES) -> SpecialVocab:
    sv = SpecialVocab(n_vocab, types)
    tj = folder.json_object("tokenizer.json")
    raw_cfg = folder.json_object("tokenizer_config.json")
    cfg = dict(raw_cfg) if raw_cfg is not None else None
    added: list[Any] = []
    if tj is not None:
        if load_merges:
            sv.merges = merges_of(tj)
        if isinstance(tj.get("normalizer"), dict):
            sv.normalizer(tj["normalizer"])
        added = [a for a in tj.get("added_tokens") or [] if isinstance(a, dict)]
        if cfg is not None:
            if not cfg.get("bos_token") and cfg.get("cls_token"):
                cfg["bos_token"] = cfg["cls_token"]
            if not cfg.get("eos_token") and cfg.get("sep_token"):
                cfg["eos_token"] = cfg["sep_token"]
        if isinstance(tj.get("post_processor"), dict):
            _post_processor(sv, tj["post_processor"], cfg)
    if cfg:
        sv.chat_template = _chat_template(folder.path, cfg)
        for typ in sv.types:
            flag = cfg.get(f"add_{typ}_token")
            if isinstance(flag, bool) and typ not in sv.add:
                sv.add[typ] = flag
            entry = cfg.get(f"{typ}_token")
            if isinstance(entry, dict):
                entry = entry.get("content")
            if not isinstance(entry, str):
                continue
            sv.set_id(typ, next((a.get("id") for a in added if a.get("content") == entry),
                                None))
    config = folder.config
    for typ in sv.types:
        tid = config.get(f"{typ}_token_id")
        if tid is None and isinstance(config.get("text_config"), dict):
            tid = config["text_config"].get(f"{typ}_token_id")
        sv.set_id(typ, tid)
    if load_merges and not sv.merges:
        sv.merges = merges_txt(folder.path / "merges.txt")
    return sv


def fixed_special_kvs(folder: HFFolder, kv: KVList, ids: dict[str, int]) -> None:
    """A second special-token pass for fixed ids (CodeLlama's and CodeGemma's
    fill-in-the-middle tokens), as llama.cpp adds it: ids found in the files win, only
    types with a GGUF key (eot) are written, no chat template again."""
    sv = load_special(folder, None, False, tuple(ids))
    for typ, tid in ids.items():
        sv.set_id(typ, tid)
    sv.chat_template = None
    write_special(sv, kv)


def write_special(sv: SpecialVocab, kv: KVList) -> None:
    if sv.merges:
        kv.add_array(Keys.Tokenizer.MERGES, sv.merges)
    for typ, tid in sv.ids.items():
        if typ in SPECIAL_KEYS:
            kv.u32(SPECIAL_KEYS[typ], tid)
    for typ, flag in sv.add.items():
        if typ in ADD_KEYS:
            kv.boolean(ADD_KEYS[typ], flag)
    template = sv.chat_template
    if isinstance(template, str):
        kv.string(Keys.Tokenizer.CHAT_TEMPLATE, template)
    elif isinstance(template, list):
        names = []
        for entry in template:
            name, text = entry.get("name"), entry.get("template")
            if not name or not text:
                continue
            if name == "default":
                kv.string(Keys.Tokenizer.CHAT_TEMPLATE, text)
            else:
                clean = "".join(c if c.isalnum() else "_" for c in name)
                names.append(clean)
                kv.string(Keys.Tokenizer.CHAT_TEMPLATE_N.format(name=clean), text)
        if names:
            kv.add_array(Keys.Tokenizer.CHAT_TEMPLATES, sorted(names))
    if sv.lowercase is not None:
        kv.boolean("tokenizer.ggml.normalizer.lowercase", sv.lowercase)
    if sv.strip_accents is not None:
        kv.boolean("tokenizer.ggml.normalizer.strip_accents", sv.strip_accents)


def merges_of(data: dict[str, Any]) -> list[str]:
    merges = (data.get("model") or {}).get("merges")
    if not isinstance(merges, list) or not merges:
        return []
    if isinstance(merges[0], str):
        return [str(m) for m in merges]
    return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                     for part in pair) for pair in merges]


def merges_txt(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].strip().startswith("#"):
        lines = lines[1:]
    out = []
    for line in lines:
        parts = line.strip().split(None, 3)
        if len(parts) == 2:
            out.append(f"{parts[0]} {parts[1]}")
    return out
