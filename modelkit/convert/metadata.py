"""``general.*`` KVs as llama.cpp's converter derives them (gguf-py Metadata rules).

Sources, first found wins per field: the model card's YAML front matter (README.md),
config.json ``_name_or_path`` (when it has at most one slash), the folder's name. A hub
id such as ``org/Model-7B-Instruct-v2`` is split into basename, size label, finetune
and version; names are title-cased unless they are versions or acronyms.
``generation_config.json`` gives ``general.sampling.*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gguf import GGUFValueType, Keys

from modelkit.convert.hf_folder import HFFolder
from modelkit.convert.kvs import KVList

_SAMPLING = (  # generation_config key(s), GGUF key, integer?
    (("sequence",), Keys.General.SAMPLING_SEQUENCE, None),
    (("top_k",), Keys.General.SAMPLING_TOP_K, True),
    (("top_p",), Keys.General.SAMPLING_TOP_P, False),
    (("min_p",), Keys.General.SAMPLING_MIN_P, False),
    (("xtc_probability",), Keys.General.SAMPLING_XTC_PROBABILITY, False),
    (("xtc_threshold",), Keys.General.SAMPLING_XTC_THRESHOLD, False),
    (("temperature",), Keys.General.SAMPLING_TEMP, False),
    (("penalty_last_n",), Keys.General.SAMPLING_PENALTY_LAST_N, True),
    (("penalty_repeat", "repetition_penalty"), Keys.General.SAMPLING_PENALTY_REPEAT, False),
    (("mirostat",), Keys.General.SAMPLING_MIROSTAT, True),
    (("mirostat_tau",), Keys.General.SAMPLING_MIROSTAT_TAU, False),
    (("mirostat_eta",), Keys.General.SAMPLING_MIROSTAT_ETA, False),
)
_CARD_FIELDS = (  # (field, card keys in priority order)
    ("name", ("name", "model_name")), ("author", ("author", "model_author", "model_creator")),
    ("version", ("version", "model_version")),
    ("organization", ("organization", "model_organization")),
    ("description", ("description", "model_description")),
    ("finetune", ("finetune", "model_finetune")),
    ("basename", ("basename", "model_basename", "model_type")),
    ("size_label", ("size_label", "model_size_label")),
    ("source_url", ("url", "model_url")), ("source_doi", ("doi", "model_doi")),
    ("source_uuid", ("uuid", "model_uuid")), ("source_repo_url", ("repo_url", "model_repo_url")),
)
_ENTRY_KEYS = ("name", "author", "version", "organization", "description", "url", "doi",
               "uuid", "repo_url")


@dataclass
class Metadata:
    fields: dict[str, Any] = field(default_factory=dict)
    base_models: list[dict[str, Any]] | None = None
    datasets: list[dict[str, Any]] | None = None
    tags: list[Any] | None = None
    languages: list[Any] | None = None

    def setdefault(self, key: str, value: Any) -> None:
        if value is not None and self.fields.get(key) is None:
            self.fields[key] = value


def model_card(path: Path) -> dict[str, Any]:
    """The YAML front matter of README.md, as llama.cpp reads it."""
    readme = path / "README.md"
    if not readme.is_file():
        return {}
    lines = readme.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "---":
        return {}
    body = []
    for line in lines[1:]:
        if line == "---":
            break
        body.append(line)
    text = ("\n".join(body) + "\n").replace("- no\n", '- "no"\n').replace("\t", "  ")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def id_to_title(s: str) -> str:
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w)
                    else w for w in s.strip().replace("-", " ").split())


def _size_part(part: str, total_params: int, types: set[str]) -> str:
    part = part.replace("_", ".")
    if part[-1].isdecimal():  # bloom-7b1 notation
        part = part[:-2] + "." + part[-1] + part[-2]
    if len(part) > 1 and part[-2].isdecimal() and part[-1] in "kmbt":
        part = part[:-1] + part[-1].upper()
    if total_params != 0:
        try:
            label = float(part[:-1]) * pow(1000, " KMBT".find(part[-1]))
            if ((total_params < 0 and label < abs(total_params) // 8)
                    or (total_params > 0 and abs(label - total_params) > 7 * total_params // 8)):
                types.add("finetune")
                part = part[:-1] + part[-1].lower()
        except ValueError:
            pass
    if not types:
        types.add("size_label")
    return part


def id_components(model_id: str | None, total_params: int = 0) -> tuple[str | None, ...]:
    """(name, organization, basename, finetune, version, size_label) of a hub id."""
    if model_id is None:
        return (None,) * 6
    if " " in model_id:
        return (model_id,) + (None,) * 5
    org: str | None
    if "/" in model_id:
        org, full = model_id.split("/", 1)
    else:
        org, full = None, model_id
    if org and org[0] == ".":
        org = None
    parts = [p for p in full.split("-") if p]
    types: list[set[str]] = [set() for _ in parts]
    for i, part in enumerate(parts):
        if re.fullmatch(r"(v|iter)?\d+([.]\d+)*", part, re.IGNORECASE):
            types[i].add("version")
        elif re.fullmatch(r"i?q\d(_\w)*|b?fp?(16|32)", part, re.IGNORECASE):
            types[i].add("type")
            parts[i] = part.upper()
        elif i > 0 and re.fullmatch(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium"
                                    r"|large|x?xl)", part, re.IGNORECASE):
            parts[i] = _size_part(part, total_params, types[i])
        elif i > 0 and re.fullmatch(r"chat|instruct|vision|lora", part, re.IGNORECASE):
            types[i].add("type" if total_params < 0 and part.lower() == "lora" else "finetune")
    if any(c.isdecimal() for n, t in zip(parts, types, strict=True) if "size_label" in t
           for c in n):
        for n, t in zip(parts, types, strict=True):
            if "size_label" in t and all(c.isalpha() for c in n):
                t.remove("size_label")
    at_start = True
    for part, t in zip(parts, types, strict=True):
        if at_start and ((not t and part[0].isalpha()) or "version" in t):
            t.add("basename")
        else:
            at_start = False
            if not t:
                t.add("finetune")
    for _, t in zip(reversed(parts), reversed(types), strict=True):
        if "basename" in t and len(t) > 1:
            t.remove("basename")
        else:
            break

    def join(kind: str, exclude: str | None = None) -> str | None:
        picked = [p for p, t in zip(parts, types, strict=True)
                  if kind in t and (exclude is None or exclude not in t)]
        if kind == "size_label":
            picked = list(dict.fromkeys(picked))
        return "-".join(picked) or None

    basename, size = join("basename"), join("size_label")
    finetune, version = join("finetune"), join("version", "basename")
    if size is None and finetune is None and version is None:
        basename = None
    return full, org, basename, finetune, version, size


def _entry(value: Any, total_params: int) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    if not isinstance(value, str):
        return out
    if value.startswith(("http://", "https://", "ssh://")):
        out["repo_url"] = value
        m = re.match(r"https?://huggingface.co/([^/]+/[^/]+)$", value)
        if "huggingface.co" in value and m:
            _name_org_version(out, m.group(1), total_params)
        return out
    name, org = _name_org_version(out, value, total_params)
    if org is not None and name is not None:
        out["repo_url"] = f"https://huggingface.co/{org}/{name}"
    return out


def _name_org_version(out: dict[str, Any], model_id: str,
                      total_params: int) -> tuple[str | None, str | None]:
    """Fill ``out``'s name, organization and version from a model id; give the id's
    name and organization."""
    name, org, _, _, version, _ = id_components(model_id, total_params)
    if name is not None:
        out["name"] = id_to_title(name)
    if org is not None:
        out["organization"] = id_to_title(org)
    if version is not None:
        out["version"] = version
    return name, org


def _listed(card: dict[str, Any], *keys: str) -> list[Any] | None:
    for k in keys:
        if k in card:
            v = card[k]
            return [v] if isinstance(v, str) else list(v) if isinstance(v, list) else []
    return None


def _apply_id(md: Metadata, model_id: str, total_params: int) -> None:
    name, org, basename, finetune, version, size = id_components(model_id, total_params)
    md.setdefault("name", id_to_title(name) if name is not None else None)
    md.setdefault("organization", id_to_title(org) if org is not None else None)
    for key, value in (("basename", basename), ("finetune", finetune), ("version", version),
                       ("size_label", size)):
        md.setdefault(key, value)


def load_metadata(folder: HFFolder, total_params: int) -> Metadata:
    md = Metadata()
    card = model_card(folder.path)
    for key, card_keys in _CARD_FIELDS:
        for ck in card_keys:
            if ck in card:
                md.setdefault(key, card[ck])
    bases = _listed(card, "base_model", "base_models", "base_model_sources")
    if bases is not None:
        md.base_models = [_entry(b, total_params) for b in bases]
    data = _listed(card, "datasets", "dataset", "dataset_sources")
    if data is not None:
        md.datasets = [_entry(d, total_params) for d in data]
    for key in ("license", "license_name", "license_link"):
        if key in card:
            md.setdefault(key, card[key])
    for attr, keys in (("tags", ("tags", "pipeline_tag")), ("languages", ("languages",
                                                                          "language"))):
        for k in keys:
            v = card.get(k)
            if v is None:
                continue
            cur = getattr(md, attr) or []
            cur.extend([v] if isinstance(v, str) else v if isinstance(v, list) else [])
            setattr(md, attr, cur)
    name_or_path = folder.config.get("_name_or_path")
    if isinstance(name_or_path, str) and name_or_path.count("/") <= 1:
        _apply_id(md, name_or_path, total_params)
    _apply_id(md, folder.path.name, total_params)
    md.setdefault("name", folder.path.name)
    return md


def sampling_kvs(folder: HFFolder, kv: KVList) -> None:
    try:
        gen = folder.json_object("generation_config.json") or {}
    except Exception:  # an unreadable generation_config is ignored, as llama.cpp does
        gen = {}
    for src_keys, key, integer in _SAMPLING:
        value = next((gen[k] for k in src_keys if k in gen), None)
        if value is None:
            continue
        if integer is None:
            kv.string(key, str(value))
        elif integer:
            kv.add(key, int(value), GGUFValueType.INT32)
        else:
            kv.f32(key, value)


def general_kvs(md: Metadata, kv: KVList) -> None:
    f, G = md.fields, Keys.General
    for key, gkey in (("name", G.NAME), ("author", G.AUTHOR), ("version", G.VERSION),
                      ("organization", G.ORGANIZATION), ("finetune", G.FINETUNE),
                      ("basename", G.BASENAME), ("description", G.DESCRIPTION),
                      ("quantized_by", G.QUANTIZED_BY), ("size_label", G.SIZE_LABEL)):
        if f.get(key) is not None:
            kv.string(gkey, str(f[key]))
    if f.get("license") is not None:
        lic = f["license"]
        kv.string(G.LICENSE, ",".join(lic) if isinstance(lic, list) else str(lic))
    for key, gkey in (("license_name", G.LICENSE_NAME), ("license_link", G.LICENSE_LINK),
                      ("url", G.URL), ("doi", G.DOI), ("uuid", G.UUID),
                      ("repo_url", G.REPO_URL), ("source_url", G.SOURCE_URL),
                      ("source_doi", G.SOURCE_DOI), ("source_uuid", G.SOURCE_UUID),
                      ("source_repo_url", G.SOURCE_REPO_URL)):
        if f.get(key) is not None:
            kv.string(gkey, str(f[key]))
    for entries, count_key, prefix in ((md.base_models, G.BASE_MODEL_COUNT, "base_model"),
                                       (md.datasets, G.DATASET_COUNT, "dataset")):
        if entries is None:
            continue
        kv.u32(count_key, len(entries))
        for i, entry in enumerate(entries):
            for k in _ENTRY_KEYS:
                if k in entry:
                    kv.string(f"general.{prefix}.{i}.{k}", str(entry[k]))
    if md.tags is not None:
        kv.add_array(G.TAGS, [str(t) for t in md.tags])
    if md.languages is not None:
        kv.add_array(G.LANGUAGES, [str(t) for t in md.languages])
