"""The file side of the API: quantizing GGUF files (``quant_spec``, ``quantize``,
``quantize_plan``) and converting Hugging Face folders (``convert``, ``convert_lora``,
``describe_folder``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelkit.convert import ConvertResult, base_from_gguf, plan_conversion
from modelkit.convert import convert as convert_folder
from modelkit.convert import convert_lora as convert_lora_folder
from modelkit.convert.converter import outtype_sizes
from modelkit.convert.one_pass import plan_quantized
from modelkit.errors import (
    ConvertError,
    FileNotFoundModelkitError,
    ModelkitError,
    QuantizationError,
)
from modelkit.gguf_file import (
    read_gguf,
)
from modelkit.importers import ImportedModel
from modelkit.importers.hubs import hub_for
from modelkit.names import ModelName
from modelkit.progress import ProgressCallback, ignore_progress
from modelkit.quant.file_types import menu_lines, parse_ggml_type, parse_quant_name
from modelkit.quant.fileplan import FilePlan, QuantizeSpec, plan_file
from modelkit.quant.imatrix import load_imatrix
from modelkit.quant.policy import QuantOptions, parse_file_type, parse_tensor_type_option
from modelkit.quant.requantize import RequantizeResult, quantize_file


def quant_menu() -> list[str]:
    """The quantization types ``quantize``/``create -q`` accept, one line each, as
    llama-quantize lists them (with bits per weight)."""
    return menu_lines()


def quant_spec(type: str, *, imatrix: str | os.PathLike[str] | None = None,
               include_weights: Sequence[str] = (), exclude_weights: Sequence[str] = (),
               output_tensor_type: str | None = None, token_embedding_type: str | None = None,
               tensor_types: Sequence[str] = (), pure: bool = False,
               leave_output_tensor: bool = False) -> QuantizeSpec:
    """A quantization with llama-quantize's options, spelled as there: ``type`` from the
    menu (``q4_K_M``, ``IQ4_XS``, ``Q4_K_L``...), ``imatrix`` a GGUF or legacy ``.dat``
    imatrix file (its path is written into the output as given), ``tensor_types``
    ``PATTERN=TYPE`` strings (regex searched in tensor names, first match wins), types
    as ggml names them (``q8_0``, case-insensitive).  Bad values raise
    ``QuantizationError``/``ImatrixError`` before any work."""
    parse_quant_name(type)
    options = QuantOptions(
        pure=pure, quantize_output=not leave_output_tensor,
        output_tensor_type=parse_ggml_type(output_tensor_type) if output_tensor_type else None,
        token_embedding_type=(parse_ggml_type(token_embedding_type)
                              if token_embedding_type else None),
        tensor_types=tuple(parse_tensor_type_option(t) for t in tensor_types))
    im = None
    if imatrix is not None:
        im = load_imatrix(imatrix, include=include_weights, exclude=exclude_weights)
    elif include_weights or exclude_weights:
        raise QuantizationError("--include-weights/--exclude-weights need --imatrix")
    return QuantizeSpec(type, options, im)


def _as_spec(quant: str | QuantizeSpec) -> QuantizeSpec:
    return quant if isinstance(quant, QuantizeSpec) else quant_spec(quant)


def quantize(source: str | os.PathLike[str], destination: str | os.PathLike[str],
             file_type: str | QuantizeSpec, *, report: bool = False,
             workers: int | None = None, max_rmse: float | None = None,
             progress: ProgressCallback = ignore_progress) -> RequantizeResult:
    """Quantize a GGUF file into a new GGUF file (atomically written), as llama.cpp's
    ``llama-quantize`` would: same tensor types, same bytes.  ``file_type`` is a name
    from the menu or a :func:`quant_spec` (options, imatrix). With ``max_rmse`` the
    per-tensor errors are measured, and a model whose RMSE exceeds it is not left behind:
    the output is deleted and QuantizationError raised."""
    spec = _as_spec(file_type)
    src = _existing(source)
    dst = Path(destination)
    if dst.exists() and dst.resolve() == src.resolve():
        raise QuantizationError(f"{dst}: the output would overwrite the input")
    _check_writable(dst)
    if workers is not None and workers < 1:
        raise ModelkitError(f"workers must be 1 or more, not {workers}")
    existed = dst.exists()
    result = quantize_file(read_gguf(src), dst, spec.type, options=spec.options,
                           imatrix=spec.imatrix, report=report or max_rmse is not None,
                           workers=workers, progress=progress)
    if max_rmse is not None and result.rmse is not None and result.rmse > max_rmse:
        dst.unlink(missing_ok=True)
        kept = " (the previous file is gone too)" if existed else ""
        raise QuantizationError(f"rmse {result.rmse:.6g} is above --max-rmse {max_rmse} "
                                f"(worst tensor: {result.worst_tensor}); {dst} was not "
                                f"kept{kept}")
    return result


def _check_writable(dst: Path) -> None:
    """Fail before any work when the output cannot be written, naming the user's path."""
    folder = dst.parent
    if dst.is_dir():
        raise FileNotFoundModelkitError(f"{dst}: is a directory; name the output file")
    if not folder.is_dir():
        raise FileNotFoundModelkitError(f"{dst}: cannot write: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelkitError(f"{dst}: cannot write: permission denied in folder {folder}")


def quantize_plan(source: str | os.PathLike[str], file_type: str | QuantizeSpec) -> FilePlan:
    """What :func:`quantize` would do, without writing anything (``--dry-run``): every
    tensor's type and size, the totals, the exact output size, the types without a
    quantizer yet (``missing_kernels()``)."""
    spec = _as_spec(file_type)
    return plan_file(read_gguf(_existing(source)), spec.type, spec.options, spec.imatrix)


def _existing(path: str | os.PathLike[str]) -> Path:
    src = Path(path)
    if not src.exists():
        raise FileNotFoundModelkitError(f"{src}: no such file")
    return src


def _hf_folder(src: str | os.PathLike[str], progress: ProgressCallback,
               offline: bool | None) -> tuple[ImportedModel | None, Path]:
    """A local folder as is; ``hf.co/ORG/REPO[:REVISION]`` or ``modelscope.cn/ORG/REPO``
    downloaded (only the files conversion reads) through the hub's client."""
    text = os.fspath(src)
    path = Path(text)
    if path.exists() or isinstance(src, os.PathLike) or text.startswith(("/", ".", "~")):
        if not path.exists():
            raise FileNotFoundModelkitError(f"{path}: no such folder")
        if not path.is_dir():
            raise FileNotFoundModelkitError(f"{path}: not a Hugging Face model folder")
        return None, path
    name = ModelName.parse(text)
    importer = hub_for(name)
    if importer is None:
        raise FileNotFoundModelkitError(f"{text}: no such folder (and not an hf.co or "
                                        "modelscope.cn name)")
    revision = None if name.tag == "latest" else name.tag
    imported = importer.fetch(name, progress=progress, offline=offline, revision=revision)
    if imported.folder is None:
        imported.cleanup()
        raise ConvertError(f"{text}: the repository has GGUF files; use 'modelkit pull'")
    return imported, imported.folder


def convert(src: str | os.PathLike[str], out: str | os.PathLike[str], *,
            outtype: str = "auto", pre: str | None = None, offline: bool | None = None,
            progress: ProgressCallback = ignore_progress) -> ConvertResult:
    """Convert a Hugging Face model (folder or hub repository) into the GGUF file ``out``,
    as llama.cpp's convert_hf_to_gguf.py does; ``outtype`` may also be a quantization
    type (q4_K_M, ...): converted and quantized in one pass."""
    imported, folder = _hf_folder(src, progress, offline)
    try:
        return convert_folder(folder, Path(out), outtype, progress, pre)
    finally:
        if imported is not None:
            imported.cleanup()


def convert_lora(adapter: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 base: str | os.PathLike[str], outtype: str = "f32",
                 progress: ProgressCallback = ignore_progress) -> ConvertResult:
    """Convert a PEFT LoRA folder into a GGUF LoRA adapter, as convert_lora_to_gguf.py;
    ``base`` is the base model's folder (config.json) or its GGUF file."""
    base_path = Path(base)
    if not base_path.exists():
        raise FileNotFoundModelkitError(f"{base_path}: no such file or folder")
    adapter_path = Path(adapter)
    if not adapter_path.is_dir():
        raise FileNotFoundModelkitError(f"{adapter_path}: not a PEFT adapter folder")
    base_arg = (base_path if base_path.is_dir()
                else base_from_gguf(read_gguf(base_path).metadata, adapter_path))
    return convert_lora_folder(adapter_path, Path(out), base_arg, outtype, progress)


@dataclass(frozen=True)
class FolderInfo:
    """What ``show`` reports about a Hugging Face folder: the GGUF it would become."""

    path: str
    hf_architecture: str
    architecture: str
    parameter_count: int
    context_length: int | None
    tensor_count: int
    sizes: dict[str, int]  # outtype -> GGUF file size


def describe_folder(src: str | os.PathLike[str]) -> FolderInfo:
    plan = plan_conversion(Path(src), "f16")
    try:
        sizes = outtype_sizes(plan)
        sizes["q4_K_M"] = plan_quantized(plan, parse_file_type("q4_K_M")).size
        ctx = plan.folder.find("max_position_embeddings", "n_ctx", "n_positions")
        return FolderInfo(str(src), plan.folder.hf_arch, plan.arch.arch_name,
                          plan.parameter_count, int(ctx) if ctx is not None else None,
                          len(plan.tensors), sizes)
    finally:
        plan.model.close()
