"""``create`` and ``pull``: the two ways into the builder, ``create_plan``
(``create -q TYPE --dry-run``), and ``push`` (the registry client, like ``pull``)."""

from __future__ import annotations

import os
from pathlib import Path

from modelkit import registry
from modelkit.api.files import _as_spec, quantize_plan
from modelkit.api.info import show
from modelkit.api.models import StoreArg, _store
from modelkit.build import Builder, BuildSpec, CreateResult, spec_from_modelfile
from modelkit.errors import (
    FileNotFoundModelkitError,
    ModelkitError,
    QuantizationError,
)
from modelkit.importers.hubs import hub_for
from modelkit.modelfile import Modelfile, parse, parse_file
from modelkit.names import ModelName
from modelkit.progress import ProgressCallback, ignore_progress
from modelkit.quant.fileplan import FilePlan, QuantizeSpec
from modelkit.registry import PushResult
from modelkit.store import (
    LinkMode,
)


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
