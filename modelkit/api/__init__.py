"""The Python API of modelkit. The CLI calls only these functions.

The functions live by seam (``models``: the store; ``building``: create, pull and push;
``files``: quantize and convert; ``info``: show and memory); this module names them all.

Every function takes an optional ``store`` (a ``Store`` or a models directory path;
default: ``$MODELKIT_MODELS``, ``$OLLAMA_MODELS``, ``~/.ollama/models``) and raises
``ModelkitError`` subclasses for anything the caller did wrong.

Names load on first use (PEP 562): ``modelkit list`` needs the store, not numpy, gguf,
the converter or the registry client, and each of those costs a tenth of a second or
more to import. ``EXPORTS`` says where each name lives; ``load`` imports names ahead
of use (the CLI does that for a command while a Ctrl-C is held back).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelkit.api.building import create, create_plan, pull, push
    from modelkit.api.files import (
        FolderInfo,
        convert,
        convert_lora,
        describe_folder,
        quant_menu,
        quant_spec,
        quantize,
        quantize_plan,
    )
    from modelkit.api.info import ModelInfo, is_hf_folder, memory, show
    from modelkit.api.models import (
        ModelSummary,
        copy,
        list_models,
        parse_modelfile,
        prune,
        remove,
        verify,
    )
    from modelkit.build import CreateResult
    from modelkit.convert import ConvertResult
    from modelkit.gguf_file import (
        QuantizationView,
        bits_per_weight,
        file_type_label,
        quantization_view,
    )
    from modelkit.gguf_file.memory import KV_TYPES, MemoryEstimate
    from modelkit.gostrconv import format_float
    from modelkit.humanize import human_bytes, human_number, human_time
    from modelkit.modelfile import format_modelfile
    from modelkit.progress import ProgressCallback, ProgressEvent
    from modelkit.quant.file_types import FILE_TYPES
    from modelkit.quant.fileplan import FilePlan, QuantizeSpec, plan_json, plan_lines
    from modelkit.quant.requantize import RequantizeResult
    from modelkit.registry import PushResult
    from modelkit.store import DamagedManifest, PrunePlan
    from modelkit.store.verify import BlobProblem, VerifyReport

# Where each public name lives (the module is imported when the name is first used).
EXPORTS: dict[str, str] = {
    **dict.fromkeys(("create", "create_plan", "pull", "push"), "modelkit.api.building"),
    **dict.fromkeys(("FolderInfo", "convert", "convert_lora", "describe_folder",
                     "quant_menu", "quant_spec", "quantize", "quantize_plan"),
                    "modelkit.api.files"),
    **dict.fromkeys(("ModelInfo", "is_hf_folder", "memory", "show"), "modelkit.api.info"),
    **dict.fromkeys(("ModelSummary", "copy", "list_models", "parse_modelfile", "prune",
                     "remove", "verify"), "modelkit.api.models"),
    # what the functions above return or report, and Ollama's way of printing it
    "CreateResult": "modelkit.build",
    "ConvertResult": "modelkit.convert",
    **dict.fromkeys(("QuantizationView", "bits_per_weight", "file_type_label",
                     "quantization_view"), "modelkit.gguf_file"),
    **dict.fromkeys(("KV_TYPES", "MemoryEstimate"), "modelkit.gguf_file.memory"),
    "format_float": "modelkit.gostrconv",
    **dict.fromkeys(("human_bytes", "human_number", "human_time"), "modelkit.humanize"),
    "format_modelfile": "modelkit.modelfile",
    **dict.fromkeys(("ProgressCallback", "ProgressEvent"), "modelkit.progress"),
    "FILE_TYPES": "modelkit.quant.file_types",  # the menu: the types -q and quantize accept
    **dict.fromkeys(("FilePlan", "QuantizeSpec", "plan_json", "plan_lines"),
                    "modelkit.quant.fileplan"),
    "RequantizeResult": "modelkit.quant.requantize",
    "PushResult": "modelkit.registry",
    **dict.fromkeys(("DamagedManifest", "PrunePlan"), "modelkit.store"),
    **dict.fromkeys(("BlobProblem", "VerifyReport"), "modelkit.store.verify"),
}
__all__ = [  # the names of EXPORTS, spelled out for type checkers and linters
    "BlobProblem", "ConvertResult", "CreateResult", "DamagedManifest", "FILE_TYPES", "FilePlan",
    "FolderInfo", "KV_TYPES", "MemoryEstimate", "ModelInfo", "ModelSummary", "ProgressCallback",
    "ProgressEvent", "PrunePlan", "PushResult", "QuantizationView", "QuantizeSpec",
    "RequantizeResult", "VerifyReport", "bits_per_weight", "convert", "convert_lora", "copy",
    "create", "create_plan", "describe_folder", "file_type_label", "format_float",
    "format_modelfile", "human_bytes", "human_number", "human_time", "is_hf_folder", "list_models",
    "memory", "parse_modelfile", "plan_json", "plan_lines", "prune", "pull", "push", "quant_menu",
    "quant_spec", "quantization_view", "quantize", "quantize_plan", "remove", "show", "verify",
]


def __getattr__(name: str) -> Any:
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelkit.api' has no attribute {name!r}")
    # Deferred for start-up cost: each name's module loads when the name is first used.
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load(*names: str) -> None:
    """Import the modules behind ``names`` now (unknown names raise AttributeError)."""
    for name in names:
        __getattr__(name)
