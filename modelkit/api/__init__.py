"""The Python API of modelkit. The CLI calls only these functions.

The functions live by seam (``models``: the store; ``building``: create and pull;
``files``: quantize and convert; ``info``: show and memory); this module names them all.

Every function takes an optional ``store`` (a ``Store`` or a models directory path;
default: ``$MODELKIT_MODELS``, ``$OLLAMA_MODELS``, ``~/.ollama/models``) and raises
``ModelkitError`` subclasses for anything the caller did wrong.
"""

from __future__ import annotations

from modelkit.api.building import create, create_plan, pull
from modelkit.api.files import (
    FolderInfo,
    convert,
    convert_lora,
    describe_folder,
    is_hf_folder,
    quant_menu,
    quant_spec,
    quantize,
    quantize_plan,
)
from modelkit.api.info import ModelInfo, memory, show
from modelkit.api.models import (
    ModelSummary,
    copy,
    list_models,
    parse_modelfile,
    prune,
    push,
    remove,
    verify,
)
from modelkit.build import CreateResult
from modelkit.convert import ConvertResult
from modelkit.gguf_file import QuantizationView, bits_per_weight, file_type_label, quantization_view
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

__all__ = [
    "FolderInfo", "ModelInfo", "ModelSummary", "convert", "convert_lora", "copy", "create",
    "create_plan", "describe_folder", "format_modelfile", "is_hf_folder", "list_models",
    "memory", "parse_modelfile", "prune", "pull", "push", "quant_menu", "quant_spec",
    "quantize", "quantize_plan", "plan_json", "plan_lines", "remove", "show", "verify",
    # what the functions above return or report, and Ollama's way of printing it
    "FILE_TYPES",  # the menu: the quantization types create -q and quantize accept
    "KV_TYPES", "MemoryEstimate",
    "BlobProblem", "ConvertResult", "CreateResult", "DamagedManifest", "FilePlan",
    "ProgressCallback", "ProgressEvent", "PrunePlan", "PushResult", "QuantizationView",
    "QuantizeSpec", "RequantizeResult", "VerifyReport", "bits_per_weight", "file_type_label",
    "format_float", "human_bytes", "human_number", "human_time", "quantization_view",
]
