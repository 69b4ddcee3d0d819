"""The ``modelkit`` command: parse arguments, call ``modelkit.api``, render.

This is the only module that prints. Errors become one line on stderr
(``Error: <what and where>``) and an exit code from ``EXIT_CODES``; a traceback is shown
only with ``MODELKIT_DEBUG=1``. Progress is one line per status on stdout, with bars on
stderr when that is a terminal, so stderr holds nothing but the error when there is one;
``--json`` prints events and results as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import sys
import textwrap
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from modelkit import api
from modelkit import errors as E
from modelkit.api import (
    ProgressEvent,
    QuantizationView,
    bits_per_weight,
    file_type_label,
    human_bytes,
    human_number,
    human_time,
    quantization_view,
)
from modelkit.version import __version__

# One table: error class -> exit code (the most specific class listed wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (E.InvalidNameError, 11),
    (E.ModelfileError, 3),
    (E.ParameterError, 3),
    (E.TemplateError, 3),
    (E.ModelNotFoundError, 4),
    (E.FileNotFoundModelkitError, 4),
    (E.GGUFError, 5),
    (E.DigestError, 6),
    (E.ImatrixError, 11),
    (E.QuantizationError, 7),
    (E.ConvertError, 12),
    (E.StoreError, 8),
    (E.UnauthorizedError, 10),
    (E.HubError, 9),
    (E.RegistryError, 9),
    (E.ModelkitError, 1),
)
EXIT_USAGE = 2  # argparse's code for a bad command line
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a Unix tool killed by a closed pipe returns
# Loggers of the hub clients: their own timestamped lines are noise beside our status lines.
HUB_LOGGERS = ("huggingface_hub", "modelscope_hub", "modelscope", "filelock", "urllib3")


def exit_code_for(exc: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_INTERNAL


# ------------------------------------------------------------------ progress
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

    def __call__(self, event: ProgressEvent) -> None:
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

    def _update_bar(self, event: ProgressEvent) -> None:
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


# --------------------------------------------------------------------- create
def cmd_create(args: argparse.Namespace) -> int:
    spec = _quant_spec(args, args.quantize)
    if args.dry_run:
        if spec is None:
            raise E.QuantizationError("--dry-run shows a quantization plan: give -q TYPE")
        print_dry_run(api.create_plan(args.file, spec), json_mode=args.json)
        return 0
    printer = ProgressPrinter(json_mode=args.json)
    try:
        result = api.create(args.name, args.file, quantize=spec, link=args.link,
                            offline=args.offline or None, insecure=args.insecure,
                            progress=printer)
    finally:
        printer.close()
    if args.json:
        _emit_json({"name": str(result.name), "model": result.name.display_shortest(),
                    "digest": str(result.manifest.digest), "id": result.manifest.digest.short(),
                    "size": result.manifest.total_size, "warnings": result.warnings})
    return 0


# ----------------------------------------------------------------------- show
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
                                        ["parameters", human_number(p.parameter_count)]]))
    if info.parameters:
        rows = []
        for key, value in info.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                rows.append([key, _value_text(item)])
        sections.append(("Parameters", rows))
    conversion = info.remote.conversion if info.remote is not None else None
    if conversion is not None:  # a hub repository of safetensors: what convert gives
        sections.append(("Converts to GGUF", [["from", conversion.hf_architecture]] + [
            [f"size {outtype}", human_bytes(size)] for outtype, size in conversion.sizes.items()]))
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
    kv = f"{human_bytes(m.kv)} ({m.kv_type}, {m.n_ctx} cells"
    if m.swa_cells:
        kv += (f"; sliding-window layers {m.swa_cells} cells: {human_bytes(m.kv_swa)}, "
               f"full layers: {human_bytes(m.kv_full)}")
    rows = [["context", f"{m.n_ctx} tokens" + (f", {m.parallel} sequences"
                                               if m.parallel > 1 else "")],
            ["weights", human_bytes(m.weights)], ["KV cache", kv + ")"],
            ["compute buffer", f"{human_bytes(m.compute)} (estimate, {m.n_ubatch}-token "
                               "micro-batch)"],
            ["total", human_bytes(m.total)]]
    return "  Memory\n" + _table(rows, indent=True) + "\n"


def memory_json(m: api.MemoryEstimate) -> dict[str, Any]:
    return {"memory": {"context": m.n_ctx, "parallel": m.parallel, "kv_type": m.kv_type,
                       "n_ubatch": m.n_ubatch, "weights": m.weights, "kv_cache": m.kv,
                       "kv_cache_full": m.kv_full, "kv_cache_swa": m.kv_swa,
                       "swa_cells": m.swa_cells, "compute_buffer": m.compute,
                       "total": m.total}}


SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def render_quantization(view: QuantizationView) -> str:
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
                 str(t.n_bytes), f"{bits_per_weight(t):.2f}"] for t in view.tensors]
    return "\n".join(f"  {header}\n" + _table(rows, indent=True) for header, rows in
                     (("Quantization", types), ("Layers", layers), ("Tensors", tensors))) + "\n"


def quantization_json(view: QuantizationView) -> dict[str, Any]:
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
                     "bytes": t.n_bytes, "bits_per_weight": bits_per_weight(t)}
                    for t in view.tensors],
    }


def cmd_show(args: argparse.Namespace) -> int:
    chosen = [f for f in SHOW_FIELDS if getattr(args, f)]
    if len(chosen) > 1:
        raise E.ModelkitError("only one of '--license', '--modelfile', '--parameters', "
                              "'--system', or '--template' can be specified")
    if api.is_hf_folder(args.model):
        folder = api.describe_folder(args.model)
        if args.json:
            _emit_json({"path": folder.path, "hf_architecture": folder.hf_architecture,
                        "architecture": folder.architecture,
                        "parameters": folder.parameter_count,
                        "context_length": folder.context_length,
                        "tensors": folder.tensor_count, "sizes": folder.sizes})
        else:
            sys.stdout.write(render_folder(folder))
        return 0
    info = api.show(args.model, insecure=args.insecure)
    if args.memory:
        estimate = api.memory(info, ctx=args.ctx, parallel=args.parallel,
                              kv_type=args.kv_type)
        if args.json:
            _emit_json({**memory_json(estimate), **_remote_json(info)})
        else:
            sys.stdout.write(render_memory(estimate))
        return 0
    if args.quantization:
        view = quantization_view(info.gguf)
        if args.json:
            _emit_json({**quantization_json(view), **_remote_json(info)})
        else:
            sys.stdout.write(render_quantization(view))
        return 0
    if args.json:
        _emit_json(show_json(info, verbose=args.verbose))
        return 0
    if not chosen:
        sys.stdout.write(render_show(info, verbose=args.verbose))
        return 0
    field = chosen[0]
    if field == "license":
        print(info.license)
    elif field == "modelfile":
        print(info.modelfile())
    elif field == "parameters":
        for key, value in info.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                print(f"{key:<30} {_value_text(item)}")
    elif field == "system":
        sys.stdout.write(info.system)
    else:
        sys.stdout.write(info.template)
    return 0


# ---------------------------------------------------------------- list, cp, rm
def _warn_damaged(entry: api.DamagedManifest) -> None:
    print(f"warning: skipping damaged model {entry.name.display_shortest()} "
          f"({_one_line(entry.reason)}); 'modelkit rm "
          f"{entry.name.display_shortest()}' removes it", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    models = api.list_models(args.prefix, on_damaged=_warn_damaged)
    if args.json:
        _emit_json([{"name": m.name, "model": str(m.model), "id": m.id, "digest": m.digest,
                     "size": m.size, "modified": m.modified, "family": m.family,
                     "parameter_size": m.parameter_size, "quantization": m.quantization}
                    for m in models])
        return 0
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m.name, m.id, human_bytes(m.size), human_time(m.modified)] for m in models]
    sys.stdout.write(_table(rows, indent=False))
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    target = api.copy(args.source, args.destination)
    if args.json:
        _emit_json({"source": args.source, "destination": str(target)})
    else:
        print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for name in args.names:
        _, plan = api.remove(name)
        if args.json:
            _emit_json({"deleted": name, "blobs_removed": len(plan.blobs),
                        "bytes_freed": plan.bytes_freed})
        else:
            print(f"deleted '{name}'")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    plan = api.prune(dry_run=args.dry_run)
    if args.json:
        _emit_json({"dry_run": args.dry_run, "blobs": [p.name for p in plan.blobs],
                    "temp_files": [str(p) for p in plan.temp_files],
                    "empty_dirs": [str(p) for p in plan.empty_dirs],
                    "bytes_freed": plan.bytes_freed,
                    "kept": [p.name for p in plan.kept],
                    "damaged": [str(d.path) for d in plan.damaged]})
    else:
        verb = "would remove" if args.dry_run else "removed"
        for p in (*plan.blobs, *plan.temp_files):
            print(f"{verb} {p}")
        for d in plan.empty_dirs:
            print(f"{verb} empty folder {d}")
        total = len(plan.blobs) + len(plan.temp_files)
        print(f"{verb} {total} file(s), {human_bytes(plan.bytes_freed)}")
    if plan.damaged:
        keep = "would keep" if args.dry_run else "kept"
        for entry in plan.damaged:
            print(f"warning: {_one_line(entry.reason)}", file=sys.stderr)
        print(f"warning: {keep} {len(plan.kept)} unreferenced blob(s) that the damaged "
              "manifest(s) might reference; 'modelkit rm' the damaged model(s), then prune "
              "again", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    printer = ProgressPrinter(json_mode=False, bars_only=True)
    try:
        report = api.verify(args.names, progress=printer)
    finally:
        printer.close()
    if args.json:
        def blobs(problems: Sequence[api.BlobProblem]) -> list[dict[str, Any]]:
            return [{"digest": str(b.digest), "path": str(b.path), "problem": b.problem,
                     "models": list(b.models)} for b in problems]

        _emit_json({"ok": report.ok, "checked": report.checked,
                    "bytes_checked": report.bytes_checked,
                    "missing": blobs(report.missing), "damaged": blobs(report.damaged),
                    "unreferenced": [str(p) for p in report.unreferenced],
                    "damaged_manifests": [{"path": str(d.path), "problem": d.reason}
                                          for d in report.damaged_manifests]})
    else:
        for b in (*report.missing, *report.damaged):
            users = f" (used by {', '.join(b.models)})" if b.models else ""
            print(f"{'missing' if b in report.missing else 'damaged'} {b.path}: "
                  f"{b.problem}{users}")
        for d in report.damaged_manifests:
            print(f"damaged manifest {_one_line(d.reason)}")
        for p in report.unreferenced:
            print(f"unreferenced {p} ('modelkit prune' removes it)")
        print(f"verified {report.checked} blob(s), {human_bytes(report.bytes_checked)}: "
              + ("all intact" if report.ok else "problems found"))
    if not report.ok:
        bad = len(report.missing) + len(report.damaged)
        raise E.DigestError(f"{bad} blob(s) missing or damaged, "
                            f"{len(report.damaged_manifests)} damaged manifest(s): delete the "
                            "damaged blob files listed, then create or pull the models that "
                            "use them again ('modelkit rm' a damaged manifest)")
    return 0


# ---------------------------------------------------------------------- pull
def cmd_pull(args: argparse.Namespace) -> int:
    printer = ProgressPrinter(json_mode=args.json)
    try:
        result = api.pull(args.name, quantize=_quant_spec(args, args.quantize),
                          offline=args.offline or None,
                          insecure=args.insecure, progress=printer)
    finally:
        printer.close()
    if args.json:
        _emit_json({"name": str(result.name), "model": result.name.display_shortest(),
                    "digest": str(result.manifest.digest), "id": result.manifest.digest.short(),
                    "size": result.manifest.total_size})
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    printer = ProgressPrinter(json_mode=args.json)
    try:
        result = api.push(args.name, insecure=args.insecure, progress=printer)
    finally:
        printer.close()
    if args.json:
        _emit_json({"name": str(result.name), "digest": str(result.digest),
                    "uploaded": [str(d) for d in result.uploaded],
                    "mounted": [str(d) for d in result.mounted],
                    "existing": [str(d) for d in result.existing]})
    return 0


# ------------------------------------------------------------------ quantize
def cmd_quantize(args: argparse.Namespace) -> int:
    if args.list:
        print("allowed quantization types:\n" + "\n".join(api.quant_menu()))
        return 0
    if args.dry_run and args.type is None and args.destination is not None:
        args.type, args.destination = args.destination, None  # llama-quantize's IN TYPE
    if args.source is None or args.type is None or (args.destination is None
                                                    and not args.dry_run):
        raise E.QuantizationError("usage: modelkit quantize [OPTIONS] IN.gguf OUT.gguf TYPE "
                                  "(see --list for the types)")
    spec = _quant_spec(args, args.type)
    assert spec is not None
    if args.dry_run:
        print_dry_run(api.quantize_plan(args.source, spec), json_mode=args.json)
        return 0
    printer = ProgressPrinter(json_mode=args.json)
    try:
        result = api.quantize(args.source, args.destination, spec,
                              report=args.report, max_rmse=args.max_rmse,
                              workers=args.workers or args.nthreads, progress=printer)
    finally:
        printer.close()
    summary = {
        "source": args.source, "destination": args.destination,
        "file_type": result.file_type_name, "size": result.output_size,
        "tensors": result.tensor_count, "quantized": result.n_quantized,
        "copied": result.n_copied, "fallbacks": result.n_fallback,
        "seconds": round(result.seconds, 3),
    }
    if result.rmse is not None:
        summary |= {"rmse": result.rmse, "worst_tensor": result.worst_tensor,
                    "max_rmse": args.max_rmse, "passed": True}
    if args.json:
        if args.report:
            summary["report"] = [
                {"name": t.name, "source_type": t.source_type.name,
                 "type": t.target_type.name, "shape": list(t.shape), "bytes": t.nbytes,
                 "rmse": t.rmse, "max_abs_error": t.max_abs_error} for t in result.tensors]
        _emit_json(summary)
    else:
        if args.report:
            rows = [["name", "from", "to", "rmse", "max abs error"]]
            rows += [[t.name, t.source_type.name, t.target_type.name, f"{t.rmse or 0:.6g}",
                      f"{t.max_abs_error or 0:.6g}"] for t in result.tensors]
            sys.stdout.write(_table(rows, indent=False))
        print(f"wrote {args.destination}: {result.file_type_name}, "
              f"{result.n_quantized} tensors quantized, {result.n_copied} copied, "
              f"{human_bytes(result.output_size)}")
        if result.rmse is not None:
            print(f"rmse {result.rmse:.6g} (worst tensor: {result.worst_tensor})")
    return 0


# ------------------------------------------------- quantization options (shared)
def _quant_options(p: argparse.ArgumentParser, *, dry_run: bool) -> None:
    """llama-quantize's options, spelled as there."""
    p.add_argument("--imatrix", metavar="FILE",
                   help="importance matrix (llama-imatrix's GGUF or legacy .dat file)")
    p.add_argument("--include-weights", metavar="NAME", action="append", default=[],
                   help="use the importance matrix only for tensors whose name contains NAME")
    p.add_argument("--exclude-weights", metavar="NAME", action="append", default=[],
                   help="do not use the importance matrix for tensors whose name contains NAME")
    p.add_argument("--output-tensor-type", metavar="TYPE",
                   help="ggml type of output.weight (e.g. q8_0)")
    p.add_argument("--token-embedding-type", metavar="TYPE",
                   help="ggml type of the token embeddings")
    p.add_argument("--tensor-type", metavar="PATTERN=TYPE", action="append", default=[],
                   help="quantize tensors whose name matches the regex PATTERN to TYPE "
                        "(repeatable; the first match wins)")
    p.add_argument("--pure", action="store_true",
                   help="no k-quant mixture: every tensor gets the type's default")
    p.add_argument("--leave-output-tensor", action="store_true",
                   help="leave output.weight un(re)quantized")
    p.add_argument("--allow-requantize", action="store_true",
                   help="accepted for llama-quantize compatibility (modelkit requantizes "
                        "with a warning)")
    if dry_run:
        p.add_argument("--dry-run", action="store_true",
                       help="print each tensor's type and size and the totals; write nothing")


def _quant_spec(args: argparse.Namespace, type_name: str | None) -> api.QuantizeSpec | None:
    if type_name is None:
        for opt in ("imatrix", "include_weights", "exclude_weights", "output_tensor_type",
                    "token_embedding_type", "tensor_type", "pure", "leave_output_tensor"):
            if getattr(args, opt):
                raise E.QuantizationError(f"--{opt.replace('_', '-')} needs a quantization "
                                          "type (-q TYPE)")
        return None
    return api.quant_spec(
        type_name, imatrix=args.imatrix, include_weights=args.include_weights,
        exclude_weights=args.exclude_weights, output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type, tensor_types=args.tensor_type,
        pure=args.pure, leave_output_tensor=args.leave_output_tensor)


def print_dry_run(fp: api.FilePlan, *, json_mode: bool) -> None:
    if json_mode:
        _emit_json(api.plan_json(fp))
        return
    lines = api.plan_lines(fp)
    print("\n".join(lines[:len(fp.tensors)]))
    rows = [["type", "tensors", "size"]]
    rows += [[t, str(k), human_bytes(b)] for t, (k, b) in fp.totals_by_type().items()]
    sys.stdout.write(_table(rows, indent=False))
    print("\n".join(lines[len(fp.tensors):]))


# ------------------------------------------------------------------- convert
def cmd_convert(args: argparse.Namespace) -> int:
    printer = ProgressPrinter(json_mode=args.json)
    try:
        if args.lora:
            if not args.base:
                raise E.ConvertError("--lora needs --base (the base model's folder or GGUF)")
            result = api.convert_lora(args.source, args.output, base=args.base,
                                      outtype=args.outtype or "f32", progress=printer)
        else:
            result = api.convert(args.source, args.output, outtype=args.outtype or "auto",
                                 pre=args.pre, offline=args.offline or None,
                                 progress=printer)
    finally:
        printer.close()
    ftype = file_type_label(int(result.file_type))
    if args.json:
        _emit_json({"source": args.source, "output": str(result.path),
                    "architecture": result.architecture, "file_type": ftype,
                    "tensors": result.n_tensors, "size": result.size,
                    "sha256": result.sha256, "warnings": list(result.warnings)})
        return 0
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {result.path}: {result.architecture}, {ftype}, {result.n_tensors} tensors, "
          f"{human_bytes(result.size)} (sha256 {result.sha256})")
    return 0


def render_folder(info: api.FolderInfo) -> str:
    rows = [["architecture", f"{info.architecture} ({info.hf_architecture})"],
            ["parameters", human_number(info.parameter_count)]]
    if info.context_length is not None:
        rows.append(["context length", str(info.context_length)])
    rows.append(["tensors", str(info.tensor_count)])
    sizes = [[outtype, human_bytes(size)] for outtype, size in info.sizes.items()]
    return ("  Hugging Face model (converts to GGUF)\n" + _table(rows, indent=True) + "\n"
            "  Size per outtype\n" + _table(sizes, indent=True))


# ---------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: must be 1 or more")
    return value


# Two or three examples per verb, shown at the end of its --help.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "create": ("modelkit create liang-ai -f samples/liang-ai/Modelfile",
               "modelkit create mymodel -f Modelfile -q q4_K_M",
               "modelkit create mymodel --link    # share the GGUF's storage (reflink)"),
    "pull": ("modelkit pull hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
             "modelkit pull modelscope.cn/Qwen/Qwen2.5-0.5B-Instruct-GGUF:q8_0",
             "modelkit pull localhost:5000/team/mymodel:v1 --insecure"),
    "push": ("modelkit push localhost:5000/team/mymodel:v1 --insecure",
             "modelkit push ghcr.io/me/mymodel:latest"),
    "quantize": ("modelkit quantize model-f16.gguf model-q4_K_M.gguf q4_K_M",
                 "modelkit quantize --dry-run model-f16.gguf out.gguf q3_K_M",
                 "modelkit quantize --imatrix model.imatrix.gguf model-f16.gguf "
                 "model-iq4_xs.gguf iq4_xs"),
    "convert": ("modelkit convert ./Qwen2.5-0.5B -o qwen-f16.gguf",
                "modelkit convert hf.co/Qwen/Qwen2.5-0.5B -o qwen-q8_0.gguf --outtype q8_0",
                "modelkit convert ./my-lora --lora --base ./Qwen2.5-0.5B -o lora.gguf"),
    "show": ("modelkit show liang-ai",
             "modelkit show liang-ai --modelfile > Modelfile",
             "modelkit show model.gguf --quantization --json"),
    "list": ("modelkit list", "modelkit ls hf.co/ --json"),
    "cp": ("modelkit cp liang-ai liang-ai:backup",
           "modelkit cp liang-ai localhost:5000/team/liang-ai:v1"),
    "rm": ("modelkit rm liang-ai", "modelkit rm liang-ai:backup mymodel"),
    "verify": ("modelkit verify", "modelkit verify liang-ai --json"),
    "prune": ("modelkit prune --dry-run", "modelkit prune"),
}


def _epilog(verb: str, *extra: str) -> str:
    lines = [*extra, "examples:", *(f"  {e}" for e in EXAMPLES.get(verb, ()))]
    return "\n".join(lines)


def _types_line() -> str:
    """The quantization types, from the one menu (quant/file_types.py)."""
    return textwrap.fill("supported types: " + ", ".join(api.FILE_TYPES),
                         width=78, subsequent_indent="  ") + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modelkit",
        description="Build Ollama- and llama.cpp-compatible models with no daemon.",
        epilog="Run 'modelkit COMMAND --help' for a command's arguments and examples. "
               "Models are stored in $MODELKIT_MODELS, else $OLLAMA_MODELS, else "
               "~/.ollama/models.")
    parser.add_argument("--version", action="version", version=f"modelkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
            aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        extra = (_types_line(),) if name in ("create", "quantize") else ()
        p = sub.add_parser(name, help=help_text, description=help_text, aliases=list(aliases),
                           epilog=_epilog(name, *extra),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", help="machine-readable JSON output")
        p.set_defaults(func=func)
        return p

    p = add("create", cmd_create, "Create a model from a Modelfile")
    p.add_argument("name", metavar="MODEL", help="the new model's name (e.g. mymodel:latest)")
    p.add_argument("-f", "--file", help="name of the Modelfile (default: ./Modelfile)")
    p.add_argument("-q", "--quantize", metavar="TYPE",
                   help="quantize the model to this type (e.g. q4_K_M; see 'quantize --list')")
    _quant_options(p, dry_run=True)
    p.add_argument("--link", nargs="?", const="reflink", default="copy",
                   choices=("reflink", "hard"), metavar="reflink|hard",
                   help="--link: share the GGUF's storage copy-on-write (reflink) where the "
                   "filesystem can, else copy; --link=hard: hard-link it (the model then "
                   "changes whenever the file is edited)")
    p.add_argument("--offline", action="store_true",
                   help="FROM hf.co/... and modelscope.cn/... use only the hub caches")
    p.add_argument("--insecure", action="store_true",
                   help="FROM a registry over plain http (a local registry)")

    p = add("pull", cmd_pull, "Pull a model from Hugging Face (hf.co/...), ModelScope "
            "(modelscope.cn/...) or an OCI registry")
    p.add_argument("name", metavar="MODEL",
                   help="hf.co/USER/REPO[:QUANT], modelscope.cn/USER/REPO[:QUANT] or "
                        "HOST/NAMESPACE/MODEL[:TAG]")
    p.add_argument("-q", "--quantize", metavar="TYPE", help="quantize the download to TYPE")
    _quant_options(p, dry_run=False)
    p.add_argument("--offline", action="store_true",
                   help="use only the hub clients' caches (as HF_HUB_OFFLINE=1)")
    p.add_argument("--insecure", action="store_true",
                   help="a registry over plain http (a local registry)")

    p = add("push", cmd_push, "Push a model to a registry (the name's host)")
    p.add_argument("name", metavar="MODEL", help="a stored model named HOST/NAMESPACE/MODEL[:TAG]")
    p.add_argument("--insecure", action="store_true",
                   help="a registry over plain http (a local registry)")

    p = add("quantize", cmd_quantize, "Quantize a GGUF file into another GGUF file "
            "(options as llama-quantize's, before the file names)")
    p.add_argument("source", metavar="IN.gguf", nargs="?", help="the GGUF file to quantize")
    p.add_argument("destination", metavar="OUT.gguf", nargs="?", help="the GGUF file to write")
    p.add_argument("type", metavar="TYPE", nargs="?",
                   help="a type from the menu (--list): q4_K_M, q6_K, iq4_xs, Q4_K_L, ...")
    p.add_argument("nthreads", metavar="NTHREADS", nargs="?", type=int,
                   help="as llama-quantize's last argument: worker processes")
    p.add_argument("--list", action="store_true",
                   help="print the quantization types with their bits per weight")
    _quant_options(p, dry_run=True)
    p.add_argument("--report", action="store_true",
                   help="per-tensor error against the source (RMSE, max abs error)")
    p.add_argument("--max-rmse", type=float, metavar="X",
                   help="fail (exit 7) when the whole model's RMSE exceeds X")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="processes, at least 1 (default: every core)")

    p = add("convert", cmd_convert, "Convert a Hugging Face safetensors model to GGUF "
            "(as llama.cpp's convert_hf_to_gguf.py), optionally quantizing in the same pass")
    p.add_argument("source", metavar="SRC",
                   help="a model folder, hf.co/ORG/REPO[:REVISION] or modelscope.cn/ORG/REPO")
    p.add_argument("-o", "--output", metavar="OUT.gguf", required=True,
                   help="the GGUF file to write")
    p.add_argument("--outtype", metavar="TYPE",
                   help="f32, f16, bf16, q8_0, auto (default: bf16 for BF16 weights, else "
                        "f16), or a quantization type such as q4_K_M (one pass); for "
                        "--lora f32 (default), f16, bf16 or q8_0")
    p.add_argument("--lora", action="store_true",
                   help="SRC is a PEFT LoRA adapter folder (adapter_config.json + "
                        "adapter_model.safetensors): write a GGUF LoRA adapter")
    p.add_argument("--base", metavar="PATH",
                   help="with --lora: the base model's folder or GGUF file")
    p.add_argument("--pre", metavar="NAME",
                   help="the BPE pre-tokenizer to record when its hash is not recognized")
    p.add_argument("--offline", action="store_true",
                   help="a hub source from the hub client's cache only")

    p = add("show", cmd_show, "Show information for a model or a GGUF file")
    p.add_argument("model", metavar="MODEL|PATH.gguf|HF-FOLDER",
                   help="a stored model's name, a GGUF file, or a safetensors model folder")
    for f in SHOW_FIELDS:
        p.add_argument(f"--{f}", action="store_true", help=f"show the {f} of the model")
    p.add_argument("-v", "--verbose", action="store_true", help="show metadata and tensors")
    p.add_argument("--quantization", action="store_true",
                   help="per-tensor types, bytes and bits per weight, by type and by layer")
    p.add_argument("--insecure", action="store_true",
                   help="a registry model over plain http (a local registry)")
    p.add_argument("--memory", action="store_true",
                   help="memory to run it: weights, KV cache, compute buffer, total")
    p.add_argument("--ctx", type=_positive_int, metavar="N",
                   help="--memory: context length (default: num_ctx, else the model's)")
    p.add_argument("--parallel", type=_positive_int, default=1, metavar="N",
                   help="--memory: sequences sharing the context (default 1)")
    p.add_argument("--kv-type", default="f16", choices=("f16", "q8_0", "q4_0"),
                   help="--memory: KV cache type (default f16)")

    p = add("list", cmd_list, "List models", aliases=["ls"])
    p.add_argument("prefix", nargs="?", help="only names starting with this")

    p = add("cp", cmd_cp, "Copy a model")
    p.add_argument("source", metavar="SOURCE", help="the stored model to copy")
    p.add_argument("destination", metavar="DESTINATION", help="the new name")

    p = add("rm", cmd_rm, "Remove a model and the blobs only it used")
    p.add_argument("names", metavar="MODEL", nargs="+", help="the models to remove")

    p = add("verify", cmd_verify, "Re-hash stored blobs: report missing, damaged and "
            "unreferenced ones (exit 6 on damage)")
    p.add_argument("names", metavar="MODEL", nargs="*",
                   help="check only these models' blobs (default: every blob)")

    p = add("prune", cmd_prune, "Delete unreferenced blobs and leftover temporary files")
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("MODELKIT_DEBUG") == "1"
    _Run.succeeded = False
    try:
        args = build_parser().parse_args(argv)
        if not debug:
            _quiet_hub_loggers()
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except KeyboardInterrupt:
        if _Run.succeeded:
            return 0
        print("Error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a network peer, say: a real error
            print(f"Error: {exc.strerror or exc}", file=sys.stderr)
            return 1
        # The reader went away (``| head``): stop quietly, as Unix tools do. Point stdout
        # at /dev/null so that the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except E.ModelkitError as exc:
        if debug:
            traceback.print_exc()
        print(f"Error: {_one_line(str(exc))}", file=sys.stderr)
        if isinstance(exc, E.UnknownQuantTypeError):  # an unknown type lists the menu
            print("allowed quantization types:\n" + "\n".join(api.quant_menu()),
                  file=sys.stderr)
        return exit_code_for(exc)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"Error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless debugging
        if debug:
            traceback.print_exc()
        print(f"Error: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set MODELKIT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno (captured), no poll
        return False


def _quiet_hub_loggers() -> None:
    """The hub clients log their own WARNING/INFO lines; modelkit reports through its
    callback, so they are dropped unless MODELKIT_DEBUG=1. A NullHandler stops the
    clients from attaching their stream handler; the level silences one already there."""
    for name in HUB_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False
        logger.setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|modelscope_hub|modelscope)\b")


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
