"""PARAMETER typing: the one table of parameter names and types (``PARAMETERS``), and
Ollama's conversion of PARAMETER text to the params layer's JSON values."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping

from modelkit.errors import ParameterError
from modelkit.gojson import go_json_dumps
from modelkit.gostrconv import format_float, parse_float, parse_int

# ---------------------------------------------------------------------- parameters


class ParamType(enum.Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING_LIST = "string-list"


#: Every name Ollama's ``api.FormatParams`` accepts (the JSON tags of ``api.Options``),
#: and its type. ``typical_p`` is still a field of ``api.Options`` at the reference commit.
PARAMETERS: Mapping[str, ParamType] = {
    # api.Runner
    "num_ctx": ParamType.INT,
    "num_batch": ParamType.INT,
    "num_gpu": ParamType.INT,
    "main_gpu": ParamType.INT,
    "use_mmap": ParamType.BOOL,
    "num_thread": ParamType.INT,
    "draft_num_predict": ParamType.INT,
    # api.Options
    "num_keep": ParamType.INT,
    "seed": ParamType.INT,
    "num_predict": ParamType.INT,
    "top_k": ParamType.INT,
    "top_p": ParamType.FLOAT,
    "min_p": ParamType.FLOAT,
    "typical_p": ParamType.FLOAT,
    "repeat_last_n": ParamType.INT,
    "temperature": ParamType.FLOAT,
    "repeat_penalty": ParamType.FLOAT,
    "presence_penalty": ParamType.FLOAT,
    "frequency_penalty": ParamType.FLOAT,
    "stop": ParamType.STRING_LIST,
}

#: Accepted by Ollama with ``warning: parameter <name> is deprecated`` and dropped.
DEPRECATED_PARAMETERS: frozenset[str] = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
    "mirostat", "mirostat_tau", "mirostat_eta",
})

_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def convert_parameter(name: str, value: str) -> int | float | bool | list[str]:
    """Validate and convert one PARAMETER value (``api.FormatParams`` for one name).

    Raises :class:`ParameterError` with Ollama's message. Deprecated names are not
    handled here (see :func:`convert_parameters`).
    """
    ptype = PARAMETERS.get(name)
    if ptype is None:
        raise ParameterError(f"unknown parameter '{name}'")
    if ptype is ParamType.INT:
        i = parse_int(value, 10)
        if i is None:
            raise ParameterError(f"invalid int value [{value}]")
        return i
    if ptype is ParamType.FLOAT:
        # NaN/Inf: valid for Go, but not encodable as JSON (see module doc)
        f, _ = parse_float(value, 32)
        if f is None or not math.isfinite(f):
            raise ParameterError(f"invalid float value [{value}]")
        # Ollama's CLI sends float32 values through JSON (shortest float32 digits) and the
        # server re-reads them as float64, so 0.7 stays 0.7, not 0.699999988079071.
        return float(format_float(f, "e", 32))
    if ptype is ParamType.BOOL:
        b = _BOOLS.get(value)
        if b is None:
            raise ParameterError(f"invalid bool value [{value}]")
        return b
    return [value]


def convert_parameters(pairs: Iterable[tuple[str, str]]
                       ) -> tuple[dict[str, int | float | bool | list[str]], list[str]]:
    """Validate, convert and merge PARAMETER (name, value) pairs, as Ollama's client does.

    Returns ``(params, warnings)``. List parameters (``stop``) accumulate in order;
    for scalars the last value wins. Deprecated names are dropped with a warning
    ``"parameter <name> is deprecated"`` (Ollama prints it prefixed by ``warning: ``).
    Errors: :class:`ParameterError` ``unknown parameter 'x'``, ``invalid int value [v]``,
    ``invalid float value [v]``, ``invalid bool value [v]``.
    """
    params: dict[str, int | float | bool | list[str]] = {}
    warnings: list[str] = []
    for name, value in pairs:
        if name in DEPRECATED_PARAMETERS:
            warnings.append(f"parameter {name} is deprecated")
            continue
        converted = convert_parameter(name, value)
        existing = params.get(name)
        if isinstance(existing, list) and isinstance(converted, list):
            existing.extend(converted)
        else:
            params[name] = converted
    return params, warnings


def params_json(params: Mapping[str, object]) -> bytes:
    """The params layer blob: Go ``json.Encoder.Encode`` of the map (sorted keys,
    compact, HTML-escaped, Go float format, trailing newline)."""
    return (go_json_dumps(dict(params), sort_keys=True) + "\n").encode("utf-8")
