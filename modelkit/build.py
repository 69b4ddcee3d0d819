"""Modelfile to layers and manifest: the one orchestrator of ``create``.

The steps and their order follow Ollama's ``create`` (docs/architecture.md has the data
flow): resolve FROM to base layers (a GGUF file imported byte-identical, or an existing
model's layers reused), quantize if asked, auto-detect the chat template, fill the
config from the first model layer, then apply TEMPLATE, SYSTEM, LICENSE, PARAMETER and
MESSAGE in that order, write the manifest, and finally delete the blobs that the
model's previous manifest used and nothing uses any more.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelkit import chat_templates, convert
from modelkit.errors import (
    DigestError,
    FileNotFoundModelkitError,
    GGUFError,
    ModelfileError,
    ModelNotFoundError,
    ParameterError,
    QuantizationError,
    RegistryError,
    TemplateError,
    UnauthorizedError,
)
from modelkit.gguf_file import GGUFInfo, file_type_label, read_gguf
from modelkit.gojson import go_json_dumps
from modelkit.gotemplate import validate_go_template
from modelkit.humanize import human_number
from modelkit.importers import PROJECTOR, ImportedModel
from modelkit.importers.hubs import hub_for
from modelkit.importers.local import import_local
from modelkit.importers.split import merge_into_store, plan_merge
from modelkit.manifest import GGUF_MEDIA_TYPES, Layer, Manifest, MediaType, ModelConfig
from modelkit.modelfile import Modelfile, convert_parameters, params_json
from modelkit.names import Digest, ModelName
from modelkit.progress import (
    VERIFYING,
    ByteProgress,
    ProgressCallback,
    ProgressEvent,
    ignore_progress,
)
from modelkit.quant.fileplan import QuantizeSpec
from modelkit.quant.requantize import quantize_into_store
from modelkit.registry import ensure_model
from modelkit.store import BlobWrite, LinkMode, Store, link_mode


@dataclass(frozen=True)
class BuildSpec:
    """What a Modelfile asks for, with paths resolved and repeated commands merged."""

    from_files: tuple[Path, ...] = ()
    from_model: str | None = None
    from_hub: str | None = None  # pull: a hf.co / modelscope.cn name fetched by its client
    adapters: tuple[Path, ...] = ()
    drafts: tuple[Path, ...] = ()
    template: str | None = None
    system: str | None = None
    licenses: tuple[str, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    requires: str | None = None
    renderer: str | None = None
    parser: str | None = None


@dataclass
class CreateResult:
    name: ModelName
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)


def expand_path(text: str, base_dir: Path) -> Path:
    """FROM/ADAPTER/DRAFT path expansion as Ollama does it: ``~`` and ``~user``
    expand; relative paths resolve against the Modelfile's folder."""
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded == text:
            raise FileNotFoundModelkitError(f"cannot expand {text!r}: unknown user")
        return Path(expanded)
    p = Path(text)
    return p if p.is_absolute() else base_dir / p


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..")
            or text.lower().endswith((".gguf", ".safetensors", ".bin")))


def _existing(m: Modelfile, keyword: str, base_dir: Path, source: str) -> Path:
    """The path the last ADAPTER or DRAFT names (the last one wins, as in Ollama)."""
    command = [c for c in m.commands if c.is_keyword(keyword)][-1]
    path = expand_path(command.args, base_dir)
    if not path.exists():
        raise FileNotFoundModelkitError(
            f"{source}:{command.line}: {keyword.upper()} {command.args}: no such file: {path}")
    return path


def spec_from_modelfile(m: Modelfile, base_dir: Path, source: str = "Modelfile") -> BuildSpec:
    """What ``m`` asks for. Every error names ``source`` and the command's line."""
    try:
        return _spec(m, base_dir, source)
    except ModelfileError as exc:
        if exc.path is not None:
            raise
        raise ModelfileError(exc.message, path=source, line=exc.line,
                             column=exc.column, hint=exc.hint) from None


def _spec(m: Modelfile, base_dir: Path, source: str) -> BuildSpec:
    files: list[Path] = []
    model: str | None = None
    for command in m.commands:
        if not command.is_keyword("model"):
            continue
        text = command.args
        path = expand_path(text, base_dir) if text else None
        if path is not None and path.exists():
            if path.resolve() not in {f.resolve() for f in files}:  # named twice: one layer
                files.append(path)
        elif _looks_like_path(text):
            # Ollama would send this to the server as a model name and fail there with
            # "invalid model name"; the user meant a file, so say which file is missing.
            raise FileNotFoundModelkitError(
                f"{source}:{command.line}: FROM {text}: no such file: {path}")
        else:
            model = text
    _check_placed(m, source)
    adapters = [_existing(m, "adapter", base_dir, source)] if m.adapter is not None else []
    drafts = [_existing(m, "draft", base_dir, source)] if m.draft is not None else []
    if drafts and drafts[0] in files:
        draft = [c for c in m.commands if c.is_keyword("draft")][-1]
        raise ModelfileError(
            f"DRAFT must not reference the same local path as FROM: {drafts[0]}",
            path=source, line=draft.line, column=draft.column)
    return BuildSpec(
        from_files=tuple(files),
        from_model=model,
        adapters=tuple(adapters),
        drafts=tuple(drafts),
        template=m.template,
        system=m.system,
        licenses=tuple(m.licenses),
        parameters=tuple(m.parameters),
        messages=tuple(m.messages),
        requires=m.requires,
        renderer=m.renderer,
        parser=m.parser,
    )


def _check_placed(m: Modelfile, source: str) -> None:
    """PARAMETER values and the TEMPLATE checked line by line, so that an error names
    the Modelfile and the line it is on (the build checks the merged values again)."""
    templates = [c for c in m.commands if c.is_keyword("template")]
    for command in m.commands:
        try:
            if command.is_parameter:
                convert_parameters([(command.name, command.args)])
            elif templates and command is templates[-1]:
                validate_go_template(command.args)
        except (ParameterError, TemplateError) as exc:
            column = f":{command.column}" if command.column else ""
            raise type(exc)(f"{source}:{command.line}{column}: {exc}") from None


@dataclass
class _Base:
    """A layer on its way into the manifest; ``gguf`` is set for weight layers."""

    layer: Layer
    status: str
    gguf: GGUFInfo | None = None


class Builder:
    def __init__(self, store: Store, progress: ProgressCallback = ignore_progress, *,
                 link: bool | LinkMode = "copy", offline: bool | None = None,
                 insecure: bool = False, pull: bool = False) -> None:
        self.store = store
        self.progress = progress
        # A pull (hub names) is a build under the hood, shown as Ollama shows a pull:
        # ``pulling manifest``, ``pulling <12 hex>`` per layer, ``verifying sha256
        # digest``, ``writing manifest``, ``success``; no create-only lines.
        self.pull = pull
        self._shown: set[str] = set()  # digests whose ``pulling`` line was shown
        if pull:
            self.progress = self._seen_by(progress)
        self.link = link_mode(link)
        self.offline = offline
        self.insecure = insecure  # plain http for a FROM pulled from a registry
        self.warnings: list[str] = []
        # Blobs this build wrote; those the final manifest does not use (an autodetected
        # params layer merged into a new one, say) are deleted at the end, as Ollama does.
        self.created: set[Digest] = set()
        self.converted: dict[str, dict[str, Any]] = {}  # import source -> how it converted

    def _status(self, text: str, *, warning: bool = False) -> None:
        self.progress(ProgressEvent(text, warning=warning))

    def _seen_by(self, progress: ProgressCallback) -> ProgressCallback:
        def observe(event: ProgressEvent) -> None:
            if event.digest and event.status.startswith("pulling "):
                self._shown.add(event.digest)
            if event.status == VERIFYING:
                self._shown.add(VERIFYING)
            progress(event)
        return observe

    def _show_pulled(self, manifest: Manifest) -> None:
        """Pull mode: a line (and a full bar) for each layer no download showed, then
        the digest check line, as Ollama prints them."""
        for layer in (*manifest.layers, manifest.config):
            if str(layer.digest) not in self._shown:
                self.progress(ProgressEvent(f"pulling {layer.digest.short()}", str(layer.digest),
                                            total=layer.size, completed=layer.size))
        if VERIFYING not in self._shown:
            self._status(VERIFYING)

    # ------------------------------------------------------------------ layers
    def _record(self, written: BlobWrite) -> BlobWrite:
        if written.created:
            self.created.add(written.digest)
        return written

    def _blob_layer(self, data: bytes, media_type: MediaType) -> _Base:
        written = self._record(self.store.write_blob(data))
        return _Base(Layer(media_type, written.digest, written.size), _status_for(written))

    def _import_split(self, shards: Sequence[Path], quantize: QuantizeSpec | None) -> _Base:
        """Store a split GGUF merged straight into its blob, or, with ``quantize``,
        quantized from the parts where they are; each part's header read once."""
        stem = shards[0].name
        plan = plan_merge(shards)
        media_type = _gguf_media_type(plan.describe(shards[0]))
        if quantize and media_type == MediaType.MODEL:
            return self._quantized(plan.infos, quantize)
        self._status(f"merging {len(shards)} split GGUF parts of {stem}")
        progress = ByteProgress(self.progress, f"merging {stem}")
        written, info = merge_into_store(self.store, plan, progress)
        self._record(written)
        return _Base(Layer(media_type, written.digest, written.size), _status_for(written),
                     info)

    def _import_gguf(self, path: Path, media_type: MediaType | None,
                     quantize: QuantizeSpec | None = None, label: str | None = None) -> _Base:
        """Store a GGUF file as a layer: byte-identical, or, for model weights with
        ``quantize``, quantized straight from the file (the original is never stored)."""
        if not self.pull:
            self._status("parsing GGUF")
        info = read_gguf(path)
        if media_type is None:
            media_type = _gguf_media_type(info)
        elif media_type == MediaType.ADAPTER and info.general_type != "adapter":
            kind = info.general_type or "model"
            raise GGUFError(f"{path}: ADAPTER needs a LoRA adapter GGUF (general.type "
                            f"adapter), but this file is a {kind} ({info.architecture}, "
                            f"{len(info.tensors)} tensors); use FROM for a model")
        if quantize and media_type == MediaType.MODEL:
            return self._quantized(info, quantize)
        shown = label or path.name

        def report(method: str, done: int, total: int) -> None:
            if self.pull:  # the download already showed these bytes
                return
            status = (f"{shown} is unchanged and already stored" if method == "unchanged"
                      else f"{method} file {shown}")
            self.progress(ProgressEvent(status, total=total, completed=done))

        written = self._record(self.store.import_file(path, link=self.link, progress=report))
        return _Base(Layer(media_type, written.digest, written.size), _status_for(written),
                     # the blob holds the file's bytes: its header is the one just read
                     replace(info, path=self.store.blob_path(written.digest)))

    def _fetch(self, spec: BuildSpec) -> list[ImportedModel]:
        """The GGUFs FROM names: local files and folders, or a hub repository through
        its official client (split sets come as their shards)."""
        if spec.from_hub is not None:
            name = ModelName.parse(spec.from_hub)
            importer = hub_for(name)
            if importer is None:
                raise ModelNotFoundError(f"{spec.from_hub} is not a Hugging Face or "
                                         "ModelScope name")
            return [importer.fetch(name, progress=self.progress, offline=self.offline)]
        return [import_local(p, progress=self.progress) for p in spec.from_files]

    def _base_from_imports(self, imports: Sequence[ImportedModel],
                           quantize: QuantizeSpec | None) -> list[_Base]:
        bases: list[_Base] = []
        for imported in imports:
            if imported.folder is not None:
                bases.append(self._converted(imported, quantize))
            for f in imported.files:
                role = MediaType.PROJECTOR if f.role == PROJECTOR else None
                if f.shards:
                    bases.append(self._import_split(f.shards, quantize))
                    continue
                base = self._import_gguf(f.path, role, quantize, label=f.path.name)
                if f.sha256 and base.layer.digest.hex != f.sha256 and not quantize:
                    raise DigestError(f"{f.path.name}: stored digest {base.layer.digest} "
                                      f"differs from the hub's sha256:{f.sha256}")
                if not any(b.layer.media_type == base.layer.media_type
                           and b.layer.digest == base.layer.digest for b in bases):
                    bases.append(base)  # the same file twice is one layer, as in Ollama
        if not any(b.layer.media_type == MediaType.MODEL for b in bases):
            raise GGUFError(f"{imports[0].source}: no model weights among the FROM files "
                            "(only adapters or projectors)")
        return bases

    def _converted(self, imported: ImportedModel, quantize: QuantizeSpec | None) -> _Base:
        """Convert a Hugging Face folder straight into a blob (quantized in the same
        pass with ``quantize``); nothing is stored when conversion fails."""
        assert imported.folder is not None
        if quantize is not None and not quantize.plain:
            raise QuantizationError(
                f"{imported.source}: quantization options (--imatrix, --tensor-type, "
                f"{quantize.type}...) do not apply to the one-pass conversion of a Hugging "
                "Face folder yet: convert it first ('modelkit convert'), then quantize")
        outtype = quantize.type if quantize is not None else "auto"
        conv = (convert.plan_quantize(imported.folder, outtype) if quantize is not None
                else convert.plan(imported.folder, outtype))
        label = file_type_label(int(conv.file_type))
        self._status(f"converting {imported.source} to GGUF ({label})")
        written = self._store_conversion(conv)
        self.converted[imported.source] = {
            "outtype": outtype, "file_type": label,
            "architecture": conv.conversion.arch.arch_name}
        info = read_gguf(self.store.blob_path(written.digest))
        return _Base(Layer(MediaType.MODEL, written.digest, written.size),
                     _status_for(written), info)

    def _store_conversion(self, conv: convert.Conversion) -> BlobWrite:
        """Stream a planned conversion into a new blob (nothing stored on failure)."""
        try:
            with self.store.open_writer() as w:
                conv.write(w, self.progress)
                return self._record(w.commit())
        finally:
            conv.close()

    def _adapter(self, path: Path, bases: Sequence[_Base]) -> _Base:
        """ADAPTER: a GGUF adapter as is, or a PEFT folder converted for the base model
        (its architecture and head counts read from the base's GGUF)."""
        if not path.is_dir():
            return self._import_gguf(path, MediaType.ADAPTER)
        base = next((b.gguf for b in bases
                     if b.layer.media_type == MediaType.MODEL and b.gguf is not None), None)
        if base is None:
            raise GGUFError(f"{path}: ADAPTER needs a FROM model to convert against")
        self._status(f"converting adapter {path.name}")
        written = self._store_conversion(convert.Conversion(
            convert.plan_lora(path, convert.base_from_gguf(base.metadata, path)), None))
        return _Base(Layer(MediaType.ADAPTER, written.digest, written.size),
                     _status_for(written), read_gguf(self.store.blob_path(written.digest)))

    def _provenance(self, imported: ImportedModel) -> dict[str, Any]:
        record = imported.provenance()
        converted = self.converted.get(imported.source)
        if converted is not None:
            record["converted"] = converted
            if not imported.revision:  # a local folder
                record["folder"] = str(imported.folder.resolve()) if imported.folder else ""
        return record

    def _base_from_model(self, text: str) -> tuple[list[_Base], ModelConfig]:
        base_name = ModelName.parse(text)
        stored = self.store.get(base_name)
        manifest, source = stored.manifest, stored.name.display_shortest()
        config = ModelConfig.from_bytes(self.store.read_blob(manifest.config.digest),
                                        where=f"config of {source}")
        bases = []
        for layer in manifest.layers:
            info = None
            if layer.media_type in GGUF_MEDIA_TYPES:
                info = read_gguf(self.store.blob_path(layer.digest))
            bases.append(_Base(layer.with_from(source), f"using existing layer {layer.digest}",
                               info))
        return bases, config

    # -------------------------------------------------------------- the build
    def build(self, name: ModelName, spec: BuildSpec, *, quantize: QuantizeSpec | None = None
              ) -> CreateResult:
        self._status("pulling manifest" if self.pull else "gathering model components")
        params, warnings = convert_parameters(spec.parameters)
        for w in warnings:
            self._status(f"warning: {w}", warning=True)
            self.warnings.append(w)
        if spec.template:
            validate_go_template(spec.template)

        if spec.from_model is not None:
            self._pull_missing_base(spec.from_model, quantize=None)
        name = self.store.canonical(name)
        with self.store.lock(exclusive=False):
            manifest = self._build_locked(name, spec, params, quantize)
            if self.pull:
                self._show_pulled(manifest)
            self._status("writing manifest")
            stale = self.store.replace_manifest(name, manifest, also_unused=self.created)
        self.store.prune_unused(stale)
        self._status("success")
        return CreateResult(name, manifest, self.warnings)

    def _pull_missing_base(self, text: str, *, quantize: QuantizeSpec | None) -> None:
        """FROM a name that is not in the store: pull it first, as Ollama does (a hub
        name through its client). Done before this build takes the lock."""
        base = ModelName.parse(text)
        if hub_for(base) is None:
            try:  # resolves the name once; pulls only when it is not stored
                ensure_model(self.store, base, insecure=self.insecure, progress=self.progress)
            except RegistryError as exc:
                if isinstance(exc, UnauthorizedError):
                    raise
                raise ModelNotFoundError(f'model "{base.display_shortest()}" not found '
                                         f"locally, and pulling it failed: {exc}") from None
            return
        if self.store.resolve(base) is not None:
            return
        puller = Builder(self.store, self.progress, link=self.link, offline=self.offline)
        puller.build(base, BuildSpec(from_hub=text), quantize=quantize)

    def _build_locked(self, name: ModelName, spec: BuildSpec, params: dict[str, Any],
                      quantize: QuantizeSpec | None) -> Manifest:
        config = ModelConfig()
        if spec.from_model is not None:
            bases, base_config = self._base_from_model(spec.from_model)
            config = ModelConfig(renderer=base_config.renderer, parser=base_config.parser,
                                 requires=base_config.requires,
                                 capabilities=base_config.capabilities)
            if quantize:
                bases = [self._quantized(b.gguf, quantize) if b.gguf is not None
                         and b.layer.media_type == MediaType.MODEL else b for b in bases]
        else:
            imports = self._fetch(spec)
            try:
                bases = self._base_from_imports(imports, quantize)
            finally:
                for imported in imports:
                    imported.cleanup()
            bases.extend(self._autodetect_template(bases))
            spec, params = _with_repo_overrides(spec, params, imports)
            config = replace(config, extra=tuple(
                ("source", self._provenance(imported)) for imported in imports
                if spec.from_hub is not None or imported.folder is not None))
        bases.extend(self._adapter(p, bases) for p in spec.adapters)
        bases.extend(self._import_gguf(p, MediaType.DRAFT) for p in spec.drafts)

        config = _fill_config(config, bases, spec)
        layers = list(bases)
        if spec.template:
            layers = _without(layers, MediaType.TEMPLATE)
            layers.append(self._blob_layer(spec.template.encode(), MediaType.TEMPLATE))
        if spec.system:
            layers = _without(layers, MediaType.SYSTEM)
            layers.append(self._blob_layer(spec.system.encode(), MediaType.SYSTEM))
        for text in spec.licenses:
            layers.append(self._blob_layer(text.encode(), MediaType.LICENSE))
        layers = self._merge_params(layers, params)
        if spec.messages:
            layers = _without(layers, MediaType.MESSAGES)
            body = [{"role": role, "content": content} for role, content in spec.messages]
            layers.append(self._blob_layer((go_json_dumps(body) + "\n").encode(),
                                           MediaType.MESSAGES))

        config_blob = self.store.write_blob(config.to_bytes())
        for b in layers:
            if not self.pull:
                self._status(b.status)
        return Manifest(
            config=Layer(MediaType.CONFIG, config_blob.digest, config_blob.size),
            layers=tuple(b.layer for b in layers),
        )

    def _autodetect_template(self, bases: Sequence[_Base]) -> list[_Base]:
        model = next((b for b in bases if b.layer.media_type == MediaType.MODEL), None)
        if model is None or model.gguf is None or not model.gguf.chat_template:
            return []
        detected = chat_templates.detect_template(model.gguf.chat_template)
        if detected is None:
            return []
        out = [self._blob_layer(detected.template.encode(), MediaType.TEMPLATE)]
        out[0].status = f"using autodetected template {detected.name}"
        if detected.parameters:
            out.append(self._blob_layer(params_json(detected.parameters), MediaType.PARAMS))
        return out

    def _merge_params(self, layers: list[_Base], params: dict[str, Any]) -> list[_Base]:
        """Request parameters win; the rest come from the base params layer(s)."""
        merged = dict(params)
        for b in layers:
            if b.layer.media_type == MediaType.PARAMS:
                existing = _load_json(self.store.read_blob(b.layer.digest))
                if isinstance(existing, dict):
                    for key, value in existing.items():
                        merged.setdefault(key, value)
        if not merged:
            return layers
        layers = _without(layers, MediaType.PARAMS)
        layers.append(self._blob_layer(params_json(merged), MediaType.PARAMS))
        return layers

    def _quantized(self, source: GGUFInfo | Sequence[GGUFInfo], target: QuantizeSpec) -> _Base:
        written, info = quantize_into_store(self.store, source, target.type, self.progress,
                                            options=target.options, imatrix=target.imatrix)
        self._record(written)
        return _Base(Layer(MediaType.MODEL, written.digest, written.size),
                     _status_for(written), info)


def _with_repo_overrides(spec: BuildSpec, params: dict[str, Any],
                         imports: Sequence[ImportedModel]) -> tuple[BuildSpec, dict[str, Any]]:
    """Repo files ``template``, ``system`` and ``params`` override what the GGUF gave,
    as the Hugging Face bridge does; the Modelfile still wins over both."""
    for imported in imports:
        if imported.template and not spec.template:
            validate_go_template(imported.template)
            spec = replace(spec, template=imported.template)
        if imported.system and not spec.system:
            spec = replace(spec, system=imported.system)
        if imported.params:
            repo_params, _ = convert_parameters(imported.parameter_pairs())
            params = {**repo_params, **params}
    return spec, params


def _status_for(written: BlobWrite) -> str:
    verb = "creating new layer" if written.created else "using existing layer"
    return f"{verb} {written.digest}"


def _without(layers: list[_Base], media_type: MediaType) -> list[_Base]:
    return [b for b in layers if b.layer.media_type != media_type]


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _gguf_media_type(info: GGUFInfo) -> MediaType:
    """Ollama's rule: adapters by general.type; projectors by general.type, or vision
    weights without a language model."""
    kind = info.general_type
    if kind == "adapter":
        return MediaType.ADAPTER
    if kind in ("projector", "mmproj"):
        return MediaType.PROJECTOR
    arch = info.architecture
    has_blocks = bool(info.metadata.get(f"{arch}.block_count"))
    if not has_blocks and info.metadata.get(f"{arch}.vision.block_count"):
        return MediaType.PROJECTOR
    if arch == "clip" and not has_blocks and (
            info.metadata.get("clip.has_vision_encoder")
            or info.metadata.get("clip.has_audio_encoder")):
        return MediaType.PROJECTOR
    return MediaType.MODEL


def _fill_config(config: ModelConfig, bases: Sequence[_Base], spec: BuildSpec) -> ModelConfig:
    families: list[str] = []
    first: GGUFInfo | None = None
    for b in bases:
        if b.layer.media_type == MediaType.MODEL and b.gguf is not None:
            first = first or b.gguf
            families.append(b.gguf.architecture)
    if first is None:
        raise GGUFError("the model has no weights layer")
    return ModelConfig(
        model_format="gguf",
        model_family=first.architecture,
        model_families=tuple(families),
        model_type=human_number(first.parameter_count),
        file_type=first.file_type_label,
        renderer=spec.renderer or config.renderer,
        parser=spec.parser or config.parser,
        requires=spec.requires or config.requires,
        capabilities=config.capabilities,
        extra=config.extra,
    )
