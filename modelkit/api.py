"""The Python API of modelkit. The CLI calls only these functions.

Every function takes an optional ``store`` (a ``Store`` or a models directory path;
default: ``$MODELKIT_MODELS``, ``$OLLAMA_MODELS``, ``~/.ollama/models``) and raises
``ModelkitError`` subclasses for anything the caller did wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGUFValueType

from modelkit import registry
from modelkit.build import Builder, BuildSpec, CreateResult, spec_from_modelfile
from modelkit.convert import ConvertResult, base_from_gguf, plan_conversion
from modelkit.convert import convert as convert_folder
from modelkit.convert import convert_lora as convert_lora_folder
from modelkit.convert.converter import outtype_sizes
from modelkit.convert.one_pass import plan_quantized
from modelkit.errors import (
    ConvertError,
    FileNotFoundModelkitError,
    GGUFError,
    ModelkitError,
    ModelNotFoundError,
    QuantizationError,
)
from modelkit.gguf_file import (
    GGUFInfo,
    QuantizationView,
    TensorInfo,
    bits_per_weight,
    file_type_label,
    iter_metadata_display,
    quantization_view,
    read_gguf,
)
from modelkit.gguf_file.memory import KV_TYPES, MemoryEstimate, estimate_memory
from modelkit.gostrconv import format_float
from modelkit.humanize import human_bytes, human_number, human_time
from modelkit.importers import ImportedModel
from modelkit.importers.hubs import hub_for
from modelkit.manifest import Manifest, MediaType, ModelConfig
from modelkit.modelfile import Command, Modelfile, format_modelfile, parse, parse_file
from modelkit.names import ModelName
from modelkit.peek import PeekedModel, names_a_host, peek
from modelkit.progress import ByteProgress, ProgressCallback, ProgressEvent, ignore_progress
from modelkit.quant.file_types import FILE_TYPES, menu_lines, parse_ggml_type, parse_quant_name
from modelkit.quant.fileplan import FilePlan, QuantizeSpec, plan_file, plan_json, plan_lines
from modelkit.quant.imatrix import load_imatrix
from modelkit.quant.policy import QuantOptions, parse_file_type, parse_tensor_type_option
from modelkit.quant.requantize import RequantizeResult, quantize_file
from modelkit.registry import PushResult
from modelkit.store import (
    DamagedCallback,
    DamagedManifest,
    LinkMode,
    PrunePlan,
    Store,
    StoredModel,
)
from modelkit.store.verify import BlobProblem, VerifyReport, verify_store

StoreArg = Store | str | os.PathLike[str] | None

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


def _store(store: StoreArg) -> Store:
    return store if isinstance(store, Store) else Store(store)


def parse_modelfile(source: str | bytes | os.PathLike[str]) -> Modelfile:
    """Parse Modelfile text (str or bytes), or the file at a path (``Path``)."""
    if isinstance(source, os.PathLike):
        return parse_file(source)
    return parse(source)


# ---------------------------------------------------------------------- create
def create(name: str, modelfile: str | os.PathLike[str] | Modelfile | None = None, *,
           base_dir: str | os.PathLike[str] | None = None,
           quantize: str | QuantizeSpec | None = None,
           link: bool | LinkMode = "copy", offline: bool | None = None,
           insecure: bool = False,
           store: StoreArg = None,
           progress: ProgressCallback = ignore_progress) -> CreateResult:
    """Build model ``name`` from a Modelfile.

    ``modelfile`` is a path, a parsed ``Modelfile``, or None for ``./Modelfile`` (and,
    as in Ollama, ``FROM .`` when there is none). Relative FROM/ADAPTER paths resolve
    against the Modelfile's folder (``base_dir`` for a parsed Modelfile, default cwd).
    ``link`` stores local GGUFs by ``"copy"`` (default), ``"reflink"`` (shared
    copy-on-write extents where the filesystem has them, else a copy) or ``"hard"`` (a
    hard link: the blob and the file are one, so editing the file damages the model).
    """
    model_name = ModelName.parse(name)
    spec = _modelfile_spec(modelfile, base_dir)
    builder = Builder(_store(store), progress, link=link, offline=offline,
                      insecure=insecure)
    return builder.build(model_name, spec, quantize=_as_spec(quantize) if quantize else None)


def _modelfile_spec(modelfile: str | os.PathLike[str] | Modelfile | None,
                    base_dir: str | os.PathLike[str] | None) -> BuildSpec:
    source = "Modelfile"
    if isinstance(modelfile, Modelfile):
        parsed, folder = modelfile, Path(base_dir or Path.cwd())
    else:
        path = Path(modelfile) if modelfile is not None else Path("Modelfile")
        if modelfile is None and not path.exists():
            folder = Path.cwd()
            if not any(folder.glob("*.gguf")) and not any(folder.glob("*.safetensors")):
                raise FileNotFoundModelkitError(
                    f"no Modelfile in {folder}: name one with -f FILE (or run create in a "
                    "folder holding the model's GGUF or safetensors files)")
            parsed = parse("FROM .")
        elif path.is_dir():
            raise FileNotFoundModelkitError(f"{path}: is a directory, not a Modelfile; name "
                                            f"the file, e.g. -f {path / 'Modelfile'}")
        elif not path.is_file():
            raise FileNotFoundModelkitError(f"specified Modelfile wasn't found: {path}")
        else:
            parsed, folder, source = parse_file(path), path.resolve().parent, str(path)
    return spec_from_modelfile(parsed, folder, source)


def create_plan(modelfile: str | os.PathLike[str] | Modelfile | None,
                quantize: str | QuantizeSpec, *,
                base_dir: str | os.PathLike[str] | None = None,
                store: StoreArg = None) -> FilePlan:
    """``create -q TYPE --dry-run``: the quantization plan of the Modelfile's model
    (FROM a GGUF file or a stored model), without writing anything."""
    spec = _modelfile_spec(modelfile, base_dir)
    if spec.from_model is not None:
        return quantize_plan(show(spec.from_model, store=store).path, quantize)
    for path in spec.from_files:
        if path.is_file() and _is_gguf(path):
            return quantize_plan(path, quantize)
    raise QuantizationError("--dry-run needs a Modelfile FROM a GGUF file or a stored model")


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# ------------------------------------------------------------------------ pull
def pull(name: str, *, quantize: str | QuantizeSpec | None = None,
         offline: bool | None = None,
         link: bool | LinkMode = "copy", insecure: bool = False, store: StoreArg = None,
         progress: ProgressCallback = ignore_progress) -> CreateResult:
    """Fetch model ``name`` into the store under that name.

    ``hf.co/user/repo[:tag]``, ``huggingface.co/...`` and ``modelscope.cn/user/repo[:tag]``
    download the GGUF the tag names through the official hub client, verify its sha256
    and store it byte-identical (``quantize`` quantizes it on the way in); the revision
    used is recorded in the config blob's ``source``. ``offline`` (default: the hubs'
    own settings such as ``HF_HUB_OFFLINE``) builds from the clients' caches only.
    """
    model = ModelName.parse(name)
    builder = Builder(_store(store), progress, link=link, offline=offline, pull=True)
    if hub_for(model) is None:
        if quantize:
            raise ModelkitError("--quantize applies to hf.co and modelscope.cn pulls; for a "
                                "registry, pull and then create -q")
        pulled = registry.pull(_store(store), model, insecure=insecure, progress=progress)
        return CreateResult(pulled.name, pulled.manifest)
    return builder.build(model, BuildSpec(from_hub=name),
                         quantize=_as_spec(quantize) if quantize else None)


def push(name: str, *, insecure: bool = False, store: StoreArg = None,
         progress: ProgressCallback = ignore_progress) -> PushResult:
    """Upload stored model ``name`` to its registry (the name's host), as ``ollama push``."""
    return registry.push(_store(store), name, insecure=insecure, progress=progress)


# -------------------------------------------------------------------- quantize
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


# --------------------------------------------------------------------- convert
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


def is_hf_folder(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not any(p.glob("*.gguf"))


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


# ------------------------------------------------------------------------ show
@dataclass
class ModelInfo:
    """What ``show`` reports about a stored model or a GGUF file."""

    name: str | None  # display name; None for a GGUF file
    path: str  # the model GGUF (blob or file)
    gguf: GGUFInfo
    architecture: str
    parameter_size: str
    quantization: str
    context_length: int | None
    embedding_length: int | None
    requires: str
    capabilities: list[str]
    projector: GGUFInfo | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    system: str = ""
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    manifest: Manifest | None = None
    config: ModelConfig | None = None
    remote: PeekedModel | None = None  # a model read by ranges from its hub or registry

    @property
    def bytes_read(self) -> int | None:
        """Bytes received from the network for a remote model; None for a local one."""
        return self.remote.bytes_read if self.remote is not None else None
    adapters: list[str] = field(default_factory=list)  # blob paths
    drafts: list[str] = field(default_factory=list)  # blob paths
    has_template: bool = False  # a template layer (not the GGUF's own chat template)

    @property
    def license(self) -> str:
        return "\n".join(self.licenses)

    @property
    def tensors(self) -> tuple[TensorInfo, ...]:
        return self.gguf.tensors

    def metadata(self, *, verbose: bool = False) -> dict[str, Any]:
        """Ollama's model_info. A float32 value is the float its shortest decimal form
        names (1e-06, not 9.999999974752427e-07), as Go's JSON encoder writes it."""
        types = self.gguf.metadata_types
        out = {}
        for key, value in iter_metadata_display(self.gguf, array_limit=None if verbose else 5):
            if types.get(key, (None,))[-1] == GGUFValueType.FLOAT32:
                value = ([_shortest32(v) for v in value] if isinstance(value, list)
                         else _shortest32(value))
            out[key] = value
        return out

    def modelfile(self) -> str:
        """A Modelfile that rebuilds this model, layer for layer (as ``ollama show
        --modelfile``, but numbers keep their exact form, TEMPLATE appears only when the
        model has a template layer, and a GGUF file is just its FROM, since the chat
        template inside it is Jinja that ``create`` reads from the file itself)."""
        header = ['# Modelfile generated by "modelkit show"']
        commands: list[Command] = [Command("model", self.path)]
        if self.name is None:
            return "\n".join(header) + "\n\n" + format_modelfile(Modelfile(tuple(commands)))
        header += ["# To build a new Modelfile based on this, replace FROM with:",
                   f"# FROM {self.name}"]
        if self.projector is not None:
            commands.append(Command("model", str(self.projector.path)))
        commands += [Command("adapter", path) for path in self.adapters]
        commands += [Command("draft", path) for path in self.drafts]
        if self.has_template:
            commands.append(Command("template", self.template))
        if self.system:
            commands.append(Command("system", self.system))
        for keyword in ("renderer", "parser", "requires"):
            value = getattr(self.config, keyword, "") if self.config is not None else ""
            if value:
                commands.append(Command(keyword, value))
        for key, value in self.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                commands.append(Command.parameter(key, _param_text(item)))
        commands += [Command("license", text) for text in self.licenses]
        for message in self.messages:
            commands.append(Command.message(str(message.get("role", "")),
                                            str(message.get("content", ""))))
        return "\n".join(header) + "\n\n" + format_modelfile(Modelfile(tuple(commands)))


def _shortest32(value: Any) -> Any:
    return float(format_float(value, "e", 32)) if isinstance(value, float) else value


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _capabilities(info: GGUFInfo, template: str, has_projector: bool) -> list[str]:
    """Ollama's capability rules, computed at read time."""
    caps = []
    arch = info.architecture
    caps.append("embedding" if f"{arch}.pooling_type" in info.metadata else "completion")
    if has_projector or f"{arch}.vision.block_count" in info.metadata:
        caps.append("vision")
    if f"{arch}.audio.block_count" in info.metadata:
        caps.append("audio")
    chat = info.chat_template or ""
    if ".Tools" in template or (not template and ("tools" in chat or "tool_call" in chat)):
        caps.append("tools")
    if ".Suffix" in template:
        caps.append("insert")
    if ".Think" in template or ("<think>" in chat and "</think>" in chat) or arch == "gpt-oss":
        caps.append("thinking")
    return caps


def _info_from_gguf(gguf: GGUFInfo, *, name: str | None, config: ModelConfig | None,
                    template: str = "", projector: GGUFInfo | None = None) -> ModelInfo:
    quant = config.file_type if config is not None else gguf.file_type_label
    if not quant or quant == "unknown":
        quant = gguf.dominant_type_label()
    return ModelInfo(
        name=name, path=str(gguf.path), gguf=gguf,
        architecture=gguf.architecture or (config.model_family if config else ""),
        parameter_size=(config.model_type if config and config.model_type
                        else human_number(gguf.parameter_count)),
        quantization=quant,
        context_length=gguf.context_length, embedding_length=gguf.embedding_length,
        requires=config.requires if config else "",
        capabilities=_capabilities(gguf, template, projector is not None),
        projector=projector, template=template, config=config,
    )


def show(name_or_path: str | os.PathLike[str], *, store: StoreArg = None,
         insecure: bool = False) -> ModelInfo:
    """Describe a stored model by name, or a GGUF file by path (header only).

    A model that is not in the store is read from its hub (``hf.co/...``,
    ``modelscope.cn/...``) or, when the name spells out a host, its registry: the GGUF
    header and tensor table by range requests, nothing stored (``ModelInfo.remote``).
    """
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.lower().endswith(".gguf") \
            or os.sep in text and Path(text).exists():
        path = Path(text)
        if not path.exists():
            raise FileNotFoundModelkitError(f"{path}: no such file")
        gguf = read_gguf(path)
        return _info_from_gguf(gguf, name=None, config=None, template=gguf.chat_template or "")
    s = _store(store)
    model = ModelName.parse(text)
    try:
        stored = s.get(model)
    except ModelNotFoundError:
        if hub_for(model) is None and not names_a_host(text):
            raise
        return _info_from_peek(peek(model, insecure=insecure))
    return _info_from_stored(s, stored)


def memory(info: ModelInfo, *, ctx: int | None = None, parallel: int = 1,
           kv_type: str = "f16") -> MemoryEstimate:
    """What running ``info`` takes (weights, KV cache, compute buffer) with a context of
    ``ctx`` tokens (default: the model's ``num_ctx`` parameter, else its training
    context) for ``parallel`` sequences and a ``kv_type`` cache (f16, q8_0, q4_0)."""
    if ctx is None and isinstance(info.parameters.get("num_ctx"), (int, float)):
        ctx = int(info.parameters["num_ctx"])
    extra = (info.projector,) if info.projector is not None else ()
    return estimate_memory(info.gguf, n_ctx=ctx, parallel=parallel, kv_type=kv_type,
                           extra=extra)


def _info_from_peek(peeked: PeekedModel) -> ModelInfo:
    info = _info_from_gguf(peeked.gguf, name=peeked.source, config=peeked.config,
                           template=peeked.template, projector=peeked.projector)
    info.path = peeked.source
    info.remote = peeked
    info.manifest = peeked.manifest
    info.system = peeked.system
    info.licenses = list(peeked.licenses)
    info.parameters = dict(peeked.params)
    info.messages = list(peeked.messages)
    return info


def _info_from_stored(s: Store, stored: StoredModel) -> ModelInfo:
    m = stored.manifest
    config = ModelConfig.from_bytes(s.read_blob(m.config.digest), where="config")
    model_layer = m.first(MediaType.MODEL)
    if model_layer is None:
        raise GGUFError(f"model {stored.name.display_shortest()} has no weights layer")
    gguf = read_gguf(s.blob_path(model_layer.digest))
    proj_layer = m.first(MediaType.PROJECTOR)
    projector = read_gguf(s.blob_path(proj_layer.digest)) if proj_layer else None

    def text_of(media: MediaType) -> str:
        layer = m.first(media)
        return s.read_blob(layer.digest).decode("utf-8", "replace") if layer else ""

    template = text_of(MediaType.TEMPLATE) or text_of(MediaType.PROMPT)
    info = _info_from_gguf(gguf, name=stored.name.display_shortest(), config=config,
                           template=template, projector=projector)
    info.manifest = m
    info.has_template = bool(m.first(MediaType.TEMPLATE) or m.first(MediaType.PROMPT))
    info.adapters = [str(s.blob_path(layer.digest)) for layer in m.of_type(MediaType.ADAPTER)]
    info.drafts = [str(s.blob_path(layer.digest)) for layer in m.of_type(MediaType.DRAFT)]
    info.system = text_of(MediaType.SYSTEM)
    info.licenses = [s.read_blob(layer.digest).decode("utf-8", "replace")
                     for layer in m.of_type(MediaType.LICENSE)]
    params = text_of(MediaType.PARAMS)
    info.parameters = json.loads(params) if params else {}
    messages = text_of(MediaType.MESSAGES)
    info.messages = json.loads(messages) if messages else []
    return info


# -------------------------------------------------------------- list, cp, rm
@dataclass(frozen=True)
class ModelSummary:
    name: str  # shortest display form
    model: ModelName
    id: str  # first 12 hex of the manifest digest
    digest: str
    size: int
    modified: float  # manifest mtime, seconds since the epoch
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""


def list_models(prefix: str | None = None, *, store: StoreArg = None,
                on_damaged: DamagedCallback | None = None) -> list[ModelSummary]:
    """Stored models, newest first; ``prefix`` filters names case-insensitively. A
    damaged manifest is skipped and reported to ``on_damaged`` (as Ollama's list skips it)."""
    s = _store(store)
    out = []
    for stored in s.list_models(on_damaged):
        display = stored.name.display_shortest()
        if prefix and not display.lower().startswith(prefix.lower()):
            continue
        config = None
        try:
            config = ModelConfig.from_bytes(s.read_blob(stored.manifest.config.digest))
        except Exception:  # a missing config still lists, as in Ollama  # noqa: BLE001
            config = None
        out.append(ModelSummary(
            name=display, model=stored.name, id=stored.id,
            digest=str(stored.manifest.digest), size=stored.manifest.total_size,
            modified=stored.mtime,
            family=config.model_family if config else "",
            parameter_size=config.model_type if config else "",
            quantization=config.file_type if config else "",
        ))
    out.sort(key=lambda m: m.modified, reverse=True)
    return out


def _stored(s: Store, name: ModelName, as_typed: str) -> StoredModel:
    """The stored model; not found is reported with the name as the user typed it."""
    try:
        return s.get(name)
    except ModelNotFoundError:
        raise ModelNotFoundError(f'model "{as_typed}" not found') from None


def copy(source: str, destination: str, *, store: StoreArg = None) -> ModelName:
    """Copy a model's manifest verbatim under a new name (same ID, no blob copied)."""
    s = _store(store)
    src, dst = ModelName.parse(source), ModelName.parse(destination)
    with s.lock(exclusive=False):
        existing = _stored(s, src, source)
        target = s.canonical(dst)
        if target.filepath_parts() != existing.name.filepath_parts():
            s.write_manifest(target, existing.manifest)
    return target


def remove(name: str, *, store: StoreArg = None) -> tuple[ModelName, PrunePlan]:
    """Delete a model and every blob of it that no other model uses. A damaged
    manifest is deleted too; the blobs it used are left for ``prune``."""
    s = _store(store)
    model = ModelName.parse(name)
    with s.lock(exclusive=True):
        existing = s.resolve(model)
        if existing is None:
            raise ModelNotFoundError(f'model "{name}" not found')
        removed = s.delete_manifest(existing)
        plan = PrunePlan()
        if isinstance(removed, StoredModel):
            plan = s.plan_prune({layer.digest for layer in removed.manifest.all_layers()})
            s.execute_prune(plan)
    return removed.name, plan


def prune(*, dry_run: bool = False, store: StoreArg = None) -> PrunePlan:
    """Delete unreferenced blobs, leftover temporary files and empty manifest folders.
    With ``dry_run``, only compute and return the plan."""
    s = _store(store)
    if not s.root.exists():
        return PrunePlan()
    with s.lock(exclusive=True):
        plan = s.plan_prune()
        if not dry_run:
            s.execute_prune(plan)
    return plan


def verify(names: Sequence[str] = (), *, store: StoreArg = None,
           progress: ProgressCallback = ignore_progress) -> VerifyReport:
    """Re-hash the blobs of the named models (default: every blob in the store) and
    report missing, damaged and unreferenced ones. Holds the lock shared, so no prune
    or rm runs meanwhile."""
    s = _store(store)
    models = [ModelName.parse(n) for n in names]
    for text, model in zip(names, models, strict=True):
        if s.resolve(model) is None:
            raise ModelNotFoundError(f'model "{text}" not found')
    if not s.root.exists():
        return VerifyReport()
    with s.lock(exclusive=False):
        return verify_store(s, models, ByteProgress(progress, "verifying sha256 digests"))
