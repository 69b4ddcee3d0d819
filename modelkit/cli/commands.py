"""The ``modelkit`` command's handlers: each turns parsed arguments into ``modelkit.api``
calls and prints the result through ``render``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from modelkit import api
from modelkit import errors as E
from modelkit.cli.render import (
    SHOW_FIELDS,
    ProgressPrinter,
    _emit_json,
    _one_line,
    _remote_json,
    _table,
    _value_text,
    memory_json,
    print_dry_run,
    quantization_json,
    render_folder,
    render_memory,
    render_quantization,
    render_show,
    show_json,
)


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
        return _show_view(args.json, info, memory_json(estimate), render_memory(estimate))
    if args.quantization:
        view = api.quantization_view(info.gguf)
        return _show_view(args.json, info, quantization_json(view), render_quantization(view))
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


def _show_view(json_mode: bool, info: api.ModelInfo, as_json: dict[str, Any], text: str) -> int:
    """One view of a model (--memory, --quantization): as JSON, with what was read of a
    remote model, or as text."""
    if json_mode:
        _emit_json({**as_json, **_remote_json(info)})
    else:
        sys.stdout.write(text)
    return 0


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
    rows += [[m.name, m.id, api.human_bytes(m.size), api.human_time(m.modified)] for m in models]
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
        print(f"{verb} {total} file(s), {api.human_bytes(plan.bytes_freed)}")
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
        print(f"verified {report.checked} blob(s), {api.human_bytes(report.bytes_checked)}: "
              + ("all intact" if report.ok else "problems found"))
    if not report.ok:
        bad = len(report.missing) + len(report.damaged)
        raise E.DigestError(f"{bad} blob(s) missing or damaged, "
                            f"{len(report.damaged_manifests)} damaged manifest(s): delete the "
                            "damaged blob files listed, then create or pull the models that "
                            "use them again ('modelkit rm' a damaged manifest)")
    return 0


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
              f"{api.human_bytes(result.output_size)}")
        if result.rmse is not None:
            print(f"rmse {result.rmse:.6g} (worst tensor: {result.worst_tensor})")
    return 0


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
    ftype = api.file_type_label(int(result.file_type))
    if args.json:
        _emit_json({"source": args.source, "output": str(result.path),
                    "architecture": result.architecture, "file_type": ftype,
                    "tensors": result.n_tensors, "size": result.size,
                    "sha256": result.sha256, "warnings": list(result.warnings)})
        return 0
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {result.path}: {result.architecture}, {ftype}, {result.n_tensors} tensors, "
          f"{api.human_bytes(result.size)} (sha256 {result.sha256})")
    return 0
