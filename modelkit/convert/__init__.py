"""Hugging Face safetensors folders to GGUF, as llama.cpp's convert_hf_to_gguf.py does it,
without torch: ``convert(src, out, outtype)``.

Modules: ``safetensors_file`` (header reader, memory-mapped tensors, shards),
``hf_folder`` (config.json with transformers' defaults), ``architecture`` (shared
rules and the registry) with one module per family (``llama``, ``qwen``, ``gemma``,
``phi3``, ``bert``), ``tokenizer`` / ``special_tokens`` (vocabulary KVs),
``metadata`` (general.* KVs), ``converter`` (plan, then stream).
"""

from __future__ import annotations

from pathlib import Path

from modelkit.convert.converter import (
    ConversionPlan,
    ConvertResult,
    plan_conversion,
    supported_architectures,
    write_plan,
)
from modelkit.progress import ProgressCallback, ignore_progress
from modelkit.store import atomic_file

__all__ = ["ConversionPlan", "ConvertResult", "convert", "plan_conversion",
           "supported_architectures"]


def convert(src: str | Path, out: str | Path, outtype: str = "auto",
            progress: ProgressCallback = ignore_progress) -> ConvertResult:
    """Convert the HF folder ``src`` into the GGUF file ``out`` (all or nothing)."""
    plan = plan_conversion(Path(src), outtype)
    out_path = Path(out)
    try:
        with atomic_file(out_path) as f:
            digest = write_plan(plan, f, progress)
            size = f.tell()
    finally:
        plan.model.close()
    return ConvertResult(out_path, size, digest, plan.arch.arch_name, plan.file_type,
                         len(plan.tensors), tuple(plan.warnings))
