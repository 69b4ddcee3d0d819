"""Hugging Face safetensors folders to GGUF, as llama.cpp's convert_hf_to_gguf.py does it,
without torch: ``convert(src, out, outtype)``.

``outtype`` is one of the converter's own (f32, f16, bf16, q8_0, auto) or any
quantization type modelkit supports (q4_K_M, ...): then the F16 conversion feeds the
quantizer in the same pass, and the result is what ``llama-quantize`` makes of the F16
file, byte for byte, without that file ever being written.

Modules: ``safetensors_file`` (header reader, memory-mapped tensors, shards),
``hf_folder`` (config.json with transformers' defaults), ``architecture`` (shared
rules and the registry) with one module per family (``llama``, ``qwen``, ``gemma``,
``phi3``, ``bert``), ``tokenizer`` / ``special_tokens`` (vocabulary KVs),
``metadata`` (general.* KVs), ``converter`` (plan, then stream), ``one_pass``
(convert + quantize), ``background_writer`` (the output hashed and written in threads,
with O_DIRECT to a regular file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modelkit.convert.background_writer import Writable
from modelkit.convert.converter import (
    OUTTYPES,
    ConversionPlan,
    ConvertResult,
    plan_conversion,
    supported_architectures,
    write_plan,
)
from modelkit.convert.hf_folder import HFFolder
from modelkit.convert.lora import base_from_gguf, plan_lora
from modelkit.convert.one_pass import QuantizedPlan, plan_quantized, write_quantized
from modelkit.errors import ConvertError, QuantizationError
from modelkit.progress import ProgressCallback, ignore_progress
from modelkit.quant.file_types import FILE_TYPES
from modelkit.quant.policy import parse_file_type
from modelkit.store import atomic_file

__all__ = ["ConversionPlan", "ConvertResult", "Conversion", "base_from_gguf", "convert",
           "convert_lora", "plan", "plan_conversion", "plan_quantize", "plan_lora",
           "supported_architectures", "OUTTYPE_CHOICES"]

OUTTYPE_CHOICES = (*OUTTYPES, "auto",
                   *(n for n in FILE_TYPES if n.lower() not in OUTTYPES and n != "COPY"))


class Conversion:
    """A planned conversion (possibly with quantization): sizes and KVs known, no data
    read yet. ``write(f)`` streams the GGUF and returns its sha256."""

    def __init__(self, conversion: ConversionPlan, quantized: QuantizedPlan | None) -> None:
        self.conversion = conversion
        self.quantized = quantized

    @property
    def file_type(self) -> int:
        return (self.quantized.quant.file_type if self.quantized is not None
                else self.conversion.file_type)

    @property
    def size(self) -> int:
        return self.quantized.size if self.quantized is not None else self.conversion.size

    @property
    def n_tensors(self) -> int:
        return len(self.conversion.tensors)

    def write(self, f: Writable, progress: ProgressCallback = ignore_progress) -> str:
        writer: Callable[..., str] = write_plan if self.quantized is None else write_quantized
        target = self.conversion if self.quantized is None else self.quantized
        return writer(target, f, progress)

    def close(self) -> None:
        self.conversion.model.close()


def plan(src: str | Path, outtype: str = "auto", pre: str | None = None) -> Conversion:
    """Plan converting the HF folder ``src`` to ``outtype`` (see the module doc)."""
    key = outtype.lower()
    if key in OUTTYPES or key == "auto":
        return Conversion(plan_conversion(Path(src), key, pre), None)
    return plan_quantize(src, outtype, pre)


def plan_quantize(src: str | Path, file_type: str, pre: str | None = None) -> Conversion:
    """Plan the F16 conversion quantized to ``file_type`` as llama-quantize would (for
    q8_0 too, unlike the converter's own q8_0): what ``create -q`` stores."""
    try:
        ftype = parse_file_type(file_type)
    except QuantizationError:
        raise ConvertError(f"unknown outtype {file_type!r} (f32, f16, bf16, q8_0, auto, or a "
                           f"quantization type: {', '.join(FILE_TYPES[:-1])})") from None
    base = plan_conversion(Path(src), "f16", pre)
    return Conversion(base, plan_quantized(base, ftype))


def convert(src: str | Path, out: str | Path, outtype: str = "auto",
            progress: ProgressCallback = ignore_progress, pre: str | None = None,
            ) -> ConvertResult:
    """Convert the HF folder ``src`` into the GGUF file ``out`` (all or nothing)."""
    return _write(plan(src, outtype, pre), Path(out), progress)


def _write(conv: Conversion, out: Path, progress: ProgressCallback) -> ConvertResult:
    try:
        with atomic_file(out) as f:
            digest = conv.write(f, progress)
            size = f.tell()
    finally:
        conv.close()
    c = conv.conversion
    return ConvertResult(out, size, digest, c.arch.arch_name, conv.file_type,
                         conv.n_tensors, tuple(c.warnings))


def convert_lora(adapter: str | Path, out: str | Path, base: Path | HFFolder,
                 outtype: str = "f32", progress: ProgressCallback = ignore_progress,
                 ) -> ConvertResult:
    """Convert the PEFT adapter folder ``adapter`` for the base model ``base`` (a model
    folder, or :func:`base_from_gguf`) into the GGUF LoRA adapter ``out``."""
    return _write(Conversion(plan_lora(Path(adapter), base, outtype), None), Path(out),
                  progress)
