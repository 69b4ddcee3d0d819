"""Rendering for the ``modelkit`` command: progress (lines, bars, JSON events), Ollama's
tables, and the text and JSON views of ``show``, ``show --memory``, ``show --quantization``
and dry-run plans."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from modelkit import api


class ProgressPrinter:
    """Renders ProgressEvents: JSON lines, terminal bars, or plain status lines."""

    def __init__(self, *, json_mode: bool, bars_only: bool = False) -> None:
        self.json_mode = json_mode
        self.bars_only = bars_only  # a command whose stdout is its report
        self.stream: TextIO = sys.stdout
        self.bar_stream: TextIO = sys.stderr
        self.tty = self.bar_stream.isatty() and not json_mode
        self._last_status: str | None = None
        self._bar: Any = None
        self._bar_key: tuple[str, str | None] | None = None

    def __call__(self, event: api.ProgressEvent) -> None:
        if event.status == "success":
            _Run.succeeded = True
        if self.json_mode:
            print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
            return
        if event.total is not None and self.tty:
            self._update_bar(event)
            return
        if self.bars_only:
            return
        if event.status != self._last_status:
            self._close_bar()
            self._last_status = event.status
            print(event.status, file=self.stream, flush=True)

    def _update_bar(self, event: api.ProgressEvent) -> None:
        # Deferred for start-up cost only: tqdm is needed just when a bar is drawn.
        from tqdm import tqdm

        key = (event.status, event.digest)
        if self._bar_key != key:
            self._close_bar()
            self._last_status = event.status
            in_bytes = event.unit == "B"
            self._bar = tqdm(total=event.total, desc=event.status, unit=event.unit,
                             unit_scale=in_bytes, unit_divisor=1000, file=self.bar_stream,
                             leave=True)
            self._bar_key = key
        self._bar.n = event.completed or 0
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._bar_key = None

    def close(self) -> None:
        self._close_bar()


class _Run:
    """Set once the library reported ``success``: the work is committed, so a Ctrl-C
    after that point must not turn the exit code into 130."""

    succeeded = False


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def _table(rows: Sequence[Sequence[str]], *, indent: bool) -> str:
    """Ollama's tables: every cell padded to its column and followed by 4 spaces;
    show's tables start with an empty cell, which indents them by 4."""
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    cols = [max((len(r[i]) if i < len(r) else 0) for r in rows) for i in range(width)]
    lines = []
    for r in rows:
        cells = ([""] if indent else []) + [c.ljust(cols[i]) for i, c in enumerate(r)]
        lines.append("".join(c + "    " for c in cells))
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def _short_lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[:2] + (["..."] if len(lines) > 2 else [])


def _metadata_value(value: Any) -> str:
    """Go's ``%v``: shortest floats (``1e-06``, ``10000``), lists in brackets."""
    if isinstance(value, list):
        shown = [_metadata_value(v) for v in value[:3]]
        more = len(value) - len(shown)
        return "[" + " ".join(shown) + (f" ...+{more} more" if more > 0 else "") + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return api.format_float(value, "g")
    return str(value)


def render_show(info: api.ModelInfo, *, verbose: bool) -> str:
    out = []
    model_rows = [["architecture", info.architecture], ["parameters", info.parameter_size]]
    if info.context_length is not None:
        model_rows.append(["context length", str(info.context_length)])
    if info.embedding_length is not None:
        model_rows.append(["embedding length", str(info.embedding_length)])
    model_rows.append(["quantization", info.quantization])
    if info.requires:
        model_rows.append(["requires", info.requires])
    sections: list[tuple[str, list[list[str]]]] = [("Model", model_rows)]
    sections.append(("Capabilities", [[c] for c in info.capabilities]))
    if info.projector is not None:
        p = info.projector
        sections.append(("Projector", [["architecture", p.architecture],
                                        ["parameters", api.human_number(p.parameter_count)]]))
    if info.parameters:
        rows = []
        for key, value in info.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                rows.append([key, _value_text(item)])
        sections.append(("Parameters", rows))
    conversion = info.remote.conversion if info.remote is not None else None
    if conversion is not None:  # a hub repository of safetensors: what convert gives
        sections.append(("Converts to GGUF", [["from", conversion.hf_architecture]] + [
            [f"size {outtype}", api.human_bytes(size)]
            for outtype, size in conversion.sizes.items()]))
    if info.system:
        sections.append(("System", [[line] for line in _short_lines(info.system)]))
    if info.license:
        sections.append(("License", [[line] for line in _short_lines(info.license)]))
    source = dict(info.config.extra).get("source") if info.config is not None else None
    if isinstance(source, dict):
        sections.append(("Source", _source_rows(source)))
    if verbose:
        sections.append(("Metadata", [[k, _metadata_value(v)]
                                      for k, v in info.metadata(verbose=True).items()]))
        sections.append(("Tensors", [[t.name, t.type_name,
                                      "[" + " ".join(str(d) for d in t.shape) + "]"]
                                     for t in info.tensors]))
    for header, rows in sections:
        if rows:
            out.append(f"  {header}\n" + _table(rows, indent=True))
    return "\n".join(out) + "\n"


def _source_rows(source: dict[str, Any]) -> list[list[str]]:
    """Where a model came from: the hub name and revision, or the converted folder."""
    rows = []
    if source.get("revision"):
        rows.append(["from", str(source.get("name", ""))])
        rows.append(["revision", str(source["revision"])])
    elif source.get("folder"):
        rows.append(["from", str(source["folder"])])
    converted = source.get("converted")
    if isinstance(converted, dict):
        rows.append(["converted", f"safetensors to GGUF, outtype {converted.get('outtype')} "
                                  f"({converted.get('file_type')})"])
    return rows


def show_json(info: api.ModelInfo, *, verbose: bool) -> dict[str, Any]:
    return {
        "name": info.name, "path": info.path,
        "details": {"format": "gguf", "family": info.architecture,
                    "parameter_size": info.parameter_size,
                    "quantization_level": info.quantization},
        "architecture": info.architecture, "parameter_count": info.gguf.parameter_count,
        "context_length": info.context_length, "embedding_length": info.embedding_length,
        "requires": info.requires or None,
        "capabilities": info.capabilities, "parameters": info.parameters,
        "template": info.template, "system": info.system, "license": info.license,
        "messages": info.messages, "modelfile": info.modelfile(),
        "model_info": info.metadata(verbose=verbose),
        "tensors": [{"name": t.name, "type": t.type_name, "shape": list(t.shape)}
                    for t in info.tensors] if verbose else None,
        "source": dict(info.config.extra).get("source") if info.config is not None else None,
        **_remote_json(info),
    }


def _remote_json(info: api.ModelInfo) -> dict[str, Any]:
    """For a model read from its hub or registry: what was read of how much."""
    if info.remote is None:
        return {}
    conversion = info.remote.conversion
    return {"bytes_read": info.bytes_read, "size": info.remote.size,
            "revision": info.remote.revision, "files": list(info.remote.filenames),
            "conversion": None if conversion is None else {
                "hf_architecture": conversion.hf_architecture, "sizes": conversion.sizes}}


def render_memory(m: api.MemoryEstimate) -> str:
    kv = f"{api.human_bytes(m.kv)} ({m.kv_type}, {m.n_ctx} cells"
    if m.swa_cells:
        kv += (f"; sliding-window layers {m.swa_cells} cells: {api.human_bytes(m.kv_swa)}, "
               f"full layers: {api.human_bytes(m.kv_full)}")
    rows = [["context", f"{m.n_ctx} tokens" + (f", {m.parallel} sequences"
                                               if m.parallel > 1 else "")],
            ["weights", api.human_bytes(m.weights)], ["KV cache", kv + ")"],
            ["compute buffer", f"{api.human_bytes(m.compute)} (estimate, {m.n_ubatch}-token "
                               "micro-batch)"],
            ["total", api.human_bytes(m.total)]]
    return "  Memory\n" + _table(rows, indent=True) + "\n"


def memory_json(m: api.MemoryEstimate) -> dict[str, Any]:
    return {"memory": {"context": m.n_ctx, "parallel": m.parallel, "kv_type": m.kv_type,
                       "n_ubatch": m.n_ubatch, "weights": m.weights, "kv_cache": m.kv,
                       "kv_cache_full": m.kv_full, "kv_cache_swa": m.kv_swa,
                       "swa_cells": m.swa_cells, "compute_buffer": m.compute,
                       "total": m.total}}


SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def render_quantization(view: api.QuantizationView) -> str:
    types = [["type", "tensors", "parameters", "bytes", "bits/weight"]]
    types += [[s.type_name, str(s.count), str(s.parameters), str(s.bytes),
               f"{s.bits_per_weight:.2f}"] for s in view.by_type]
    types.append(["total", str(len(view.tensors)), str(view.parameters), str(view.bytes),
                  f"{view.bits_per_weight:.2f}"])
    layers = [["layer", "parameters", "bytes", "bits/weight"]]
    layers += [[name, str(n), str(b), f"{b * 8 / n:.2f}" if n else "0"]
               for name, n, b in view.by_layer]
    tensors = [["name", "type", "shape", "bytes", "bits/weight"]]
    tensors += [[t.name, t.type_name, "[" + " ".join(str(d) for d in t.shape) + "]",
                 str(t.n_bytes), f"{api.bits_per_weight(t):.2f}"] for t in view.tensors]
    return "\n".join(f"  {header}\n" + _table(rows, indent=True) for header, rows in
                     (("Quantization", types), ("Layers", layers), ("Tensors", tensors))) + "\n"


def quantization_json(view: api.QuantizationView) -> dict[str, Any]:
    return {
        "parameters": view.parameters, "bytes": view.bytes,
        "bits_per_weight": view.bits_per_weight,
        "by_type": [{"type": s.type_name, "tensors": s.count, "parameters": s.parameters,
                     "bytes": s.bytes, "bits_per_weight": s.bits_per_weight}
                    for s in view.by_type],
        "by_layer": [{"layer": name, "parameters": n, "bytes": b,
                      "bits_per_weight": b * 8 / n if n else 0.0}
                     for name, n, b in view.by_layer],
        "tensors": [{"name": t.name, "type": t.type_name, "shape": list(t.shape),
                     "bytes": t.n_bytes, "bits_per_weight": api.bits_per_weight(t)}
                    for t in view.tensors],
    }


def render_folder(info: api.FolderInfo) -> str:
    rows = [["architecture", f"{info.architecture} ({info.hf_architecture})"],
            ["parameters", api.human_number(info.parameter_count)]]
    if info.context_length is not None:
        rows.append(["context length", str(info.context_length)])
    rows.append(["tensors", str(info.tensor_count)])
    sizes = [[outtype, api.human_bytes(size)] for outtype, size in info.sizes.items()]
    return ("  Hugging Face model (converts to GGUF)\n" + _table(rows, indent=True) + "\n"
            "  Size per outtype\n" + _table(sizes, indent=True))


def print_dry_run(fp: api.FilePlan, *, json_mode: bool) -> None:
    if json_mode:
        _emit_json(api.plan_json(fp))
        return
    lines = api.plan_lines(fp)
    print("\n".join(lines[:len(fp.tensors)]))
    rows = [["type", "tensors", "size"]]
    rows += [[t, str(k), api.human_bytes(b)] for t, (k, b) in fp.totals_by_type().items()]
    sys.stdout.write(_table(rows, indent=False))
    print("\n".join(lines[len(fp.tensors):]))
