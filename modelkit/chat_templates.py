"""Chat-template auto-detection and Go ``text/template`` validation.

Detection
---------
``ollama create`` looks at a GGUF's ``tokenizer.chat_template`` (a Jinja string) and, when it
recognises the prompt format, stores a Go template for it (``<name>.gotmpl``) and usually a
params layer with the family's stop tokens (``<name>.json``). :func:`detect_template` does the
same job, in two steps:

1. **Edit distance (Ollama's rule).** The input is compared with the published Jinja chat
   templates of each family (``templates/reference-jinja.json``, taken from the families' model
   repositories). The nearest reference wins if its Levenshtein distance (counted in code points)
   is < 100; ties go to the first reference in file order. This catches the original templates
   and fine-tunes that changed them only slightly. A bit-parallel algorithm keeps it fast, and
   references whose length differs by 100 or more are skipped, because they cannot be within
   reach.
2. **Structural markers (safety net and fallback).** Every family has a rule: markers that
   must all be present, and markers that must be absent. For example ``<|im_start|>`` plus
   ``<|im_end|>`` means ChatML unless ``<|im_sep|>`` is present (that is Phi-4), and ``[INST]``
   plus ``[/INST]`` means Mistral, or Llama 2 when ``<<SYS>>`` is present too.

   * An edit-distance winner is accepted only if the template satisfies its family's rule.
     Short templates of other formats are often within 100 edits of a reference (a Llama 4 or
     Granite 3 template is that close to ChatML's), and this veto rejects such coincidences.
   * When edit distance finds nothing, a template that satisfies exactly one rule belongs to
     that family. This recognises heavily reworked fine-tunes, such as templates that add tool
     calling or a long default system prompt.
   * Families whose markers are plain words (chatqa ``User:``/``Assistant:``, granite-instruct
     ``Question:``/``Answer:``, falcon-instruct ``Falcon:``) are never detected by markers
     alone. Their rule also forbids special tokens such as ``<|...|>``, and an edit-distance
     match for them gives way to another family's special-token markers.

If the markers point at more than one family, or at none, the result is ``None``: no template
is written, which is also what Ollama does for a template it does not know.

Templates
---------
The ``.gotmpl`` files are written for Ollama's runtime. Each one handles both the ``.Messages``
form (with ``.Role``/``.Content``, and a trailing assistant message treated as a prefill) and
the legacy ``.System``/``.Prompt``/``.Response`` form. They are loaded lazily with
:mod:`importlib.resources`, so they work from a wheel.

Go template validation lives in :mod:`modelkit.gotemplate`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

__all__ = [
    "DetectedTemplate",
    "detect_template",
    "known_templates",
    "load_template",
]


# ---------------------------------------------------------------------------------------------
# Data files
# ---------------------------------------------------------------------------------------------

#: Family names, in the order used to break edit-distance ties and to list them.
_FAMILIES: tuple[str, ...] = (
    "chatml",
    "zephyr",
    "openchat",
    "mistral-instruct",
    "starcoder2-instruct",
    "llama2-chat",
    "codellama-70b-instruct",
    "alpaca",
    "chatqa",
    "gemma-instruct",
    "gemma3-instruct",
    "llama3-instruct",
    "granite-instruct",
    "magicoder",
    "alfred",
    "phi-3",
    "falcon-instruct",
    "solar-instruct",
    "command-r",
)

_REFERENCE_FILE = "reference-jinja.json"
_MAX_DISTANCE = 100  # a match needs a distance strictly below this


@dataclass(frozen=True)
class DetectedTemplate:
    """A recognised prompt format: the Go template to store and its stop parameters."""

    name: str  # e.g. "chatml"
    template: str  # Go template text (file content of <name>.gotmpl)
    parameters: dict[str, list[str]] | None  # e.g. {"stop": [...]} from <name>.json, or None


@functools.cache
def _read_text(filename: str) -> str | None:
    entry = resources.files("modelkit") / "templates" / filename
    if not entry.is_file():
        return None
    return entry.read_text(encoding="utf-8")


@functools.cache
def _references() -> tuple[tuple[str, str], ...]:
    """(family, jinja) pairs from the reference file, in file order."""
    text = _read_text(_REFERENCE_FILE)
    if text is None:
        raise RuntimeError(f"modelkit data file templates/{_REFERENCE_FILE} is missing")
    entries = json.loads(text)
    return tuple((str(e["name"]), str(e["template"])) for e in entries)


def known_templates() -> tuple[str, ...]:
    """The names of every template family modelkit ships."""
    return _FAMILIES


def load_template(name: str) -> DetectedTemplate:
    """The shipped template and parameters of family *name* (see :func:`known_templates`)."""
    if name not in _FAMILIES:
        raise KeyError(f"unknown template family {name!r}")
    text = _read_text(f"{name}.gotmpl")
    if text is None:
        raise RuntimeError(f"modelkit data file templates/{name}.gotmpl is missing")
    # Normalise line endings the way Ollama does when it loads its own template files.
    text = text.replace("\r\n", "\n")
    raw = _read_text(f"{name}.json")
    parameters: dict[str, list[str]] | None = None
    if raw is not None:
        loaded = json.loads(raw)
        stop = loaded.get("stop") if isinstance(loaded, dict) else None
        if stop is not None:
            # Only the stop list is carried over, as Ollama does.
            parameters = {"stop": [str(s) for s in stop]}
    return DetectedTemplate(name=name, template=text, parameters=parameters)


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def _levenshtein(a: str, b: str) -> int:
    """Levenshtein distance over code points (bit-parallel, Myers/Hyyrö)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    bit = 1
    for ch in b:
        peq[ch] = peq.get(ch, 0) | bit
        bit <<= 1
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def _nearest_reference(chat_template: str) -> str | None:
    """Ollama's rule: the nearest reference family if its distance is < 100."""
    best: str | None = None
    best_distance = _MAX_DISTANCE
    for name, reference in _references():
        # |len(a) - len(b)| is a lower bound of the distance; ties keep the earlier entry.
        if abs(len(reference) - len(chat_template)) >= best_distance:
            continue
        distance = _levenshtein(chat_template, reference)
        if distance < best_distance:
            best, best_distance = name, distance
    return best


class _Rule(NamedTuple):
    all_of: tuple[tuple[str, ...], ...]  # every group needs at least one of its markers
    none_of: tuple[str, ...] = ()
    # False: the markers are plain words, too common to detect the family on their own; the
    # rule only confirms (or vetoes) an edit-distance match.
    standalone: bool = True

    def matches(self, text: str) -> bool:
        return all(any(m in text for m in group) for group in self.all_of) and not any(
            m in text for m in self.none_of
        )


# Special-token spellings that the plain-text families never use.
_SPECIAL_TOKENS = ("<|", "<\uff5c")

_RULES: dict[str, _Rule] = {
    "chatml": _Rule((("<|im_start|>",), ("<|im_end|>",)), ("<|im_sep|>",)),
    "llama3-instruct": _Rule((("<|start_header_id|>",), ("<|end_header_id|>",), ("<|eot_id|>",))),
    "gemma-instruct": _Rule((("<start_of_turn>",), ("<end_of_turn>",)), ("<start_of_image>",)),
    "gemma3-instruct": _Rule((("<start_of_turn>",), ("<end_of_turn>",), ("<start_of_image>",))),
    "mistral-instruct": _Rule((("[INST]",), ("[/INST]",)), ("<<SYS>>",)),
    "llama2-chat": _Rule((("[INST]",), ("[/INST]",), ("<<SYS>>",))),
    "phi-3": _Rule((("<|end|>",), ("<|user|>", "<|assistant|>"))),
    "zephyr": _Rule(
        (("<|user|>",), ("<|assistant|>",), ("eos_token", "</s>")),
        ("<|end|>", "[gMASK]", "<|observation|>"),
    ),
    "command-r": _Rule((("<|START_OF_TURN_TOKEN|>",), ("<|END_OF_TURN_TOKEN|>",))),
    "openchat": _Rule((("GPT4 Correct",), ("<|end_of_turn|>",))),
    "alfred": _Rule((("<start_user>",), ("<start_assistant>",), ("<end_message>",))),
    "codellama-70b-instruct": _Rule((("Source:",), ("Destination:",), ("<step>",))),
    "magicoder": _Rule((("@@ Instruction",), ("@@ Response",))),
    "alpaca": _Rule((("### Instruction:",), ("### Response:",))),
    "starcoder2-instruct": _Rule(
        (("### Instruction",), ("### Response",)), ("### Instruction:", "### Response:")
    ),
    "solar-instruct": _Rule((("### User:",), ("### Assistant:",))),
    "chatqa": _Rule((("User:",), ("Assistant:",)), _SPECIAL_TOKENS, standalone=False),
    "granite-instruct": _Rule((("Question:",), ("Answer:",)), _SPECIAL_TOKENS, standalone=False),
    "falcon-instruct": _Rule((("Falcon:",),), _SPECIAL_TOKENS, standalone=False),
}


def _marker_families(chat_template: str) -> list[str]:
    return [
        name
        for name in _FAMILIES
        if name in _RULES and _RULES[name].standalone and _RULES[name].matches(chat_template)
    ]


def _detect_name(chat_template: str) -> str | None:
    if not chat_template:
        return None
    matched = _marker_families(chat_template)
    nearest = _nearest_reference(chat_template)
    if nearest is not None:
        rule = _RULES[nearest]
        if rule.matches(chat_template) and (rule.standalone or not matched):
            return nearest
        # Otherwise the template lacks the family's own markers: an edit-distance coincidence.
    if len(matched) == 1:
        return matched[0]
    return None


def detect_template(chat_template: str) -> DetectedTemplate | None:
    """The template family of a GGUF ``tokenizer.chat_template``, or ``None`` if unknown."""
    name = _detect_name(chat_template)
    return None if name is None else load_template(name)

