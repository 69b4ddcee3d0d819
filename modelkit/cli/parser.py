"""The ``modelkit`` command line: the argument parser, each verb's options, help texts
and examples."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from typing import NoReturn

from modelkit import api
from modelkit.cli.commands import (
    cmd_convert,
    cmd_cp,
    cmd_create,
    cmd_list,
    cmd_prune,
    cmd_pull,
    cmd_push,
    cmd_quantize,
    cmd_rm,
    cmd_show,
    cmd_verify,
)
from modelkit.cli.render import SHOW_FIELDS
from modelkit.version import __version__


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (exit 2). ``epilog_head`` is
    put before the epilog when help is shown (computed then: the menu of types needs
    the quantization tables, which no other command line needs to load)."""

    epilog_head: Callable[[], str] | None = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see '{self.prog} --help')\n")

    def format_help(self) -> str:
        if self.epilog_head is not None:
            self.epilog = f"{self.epilog_head()}\n{self.epilog or ''}"
            self.epilog_head = None
        return super().format_help()


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


# The API names each verb calls: the CLI loads them before running the verb, with a
# Ctrl-C held back (an interrupted import of numpy's extension modules is an ImportError).
USES: dict[str, tuple[str, ...]] = {
    "create": ("create", "create_plan", "file_type_label"),
    "pull": ("pull", "quant_spec"),
    "push": ("push",),
    "quantize": ("quantize", "quantize_plan", "quant_spec", "quant_menu"),
    "convert": ("convert", "convert_lora", "quant_spec"),
    "show": ("show", "memory", "quantization_view", "is_hf_folder"),
    "list": ("list_models",),
    "cp": ("copy",),
    "rm": ("remove",),
    "verify": ("verify",),
    "prune": ("prune",),
}


def _epilog(verb: str) -> str:
    return "\n".join(["examples:", *(f"  {e}" for e in EXAMPLES.get(verb, ()))])


def _types_line() -> str:
    """The quantization types, from the one menu (quant/file_types.py)."""
    return textwrap.fill("supported types: " + ", ".join(api.FILE_TYPES),
                         width=78, subsequent_indent="  ") + "\n"


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
        p = sub.add_parser(name, help=help_text, description=help_text, aliases=list(aliases),
                           epilog=_epilog(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name in ("create", "quantize") and isinstance(p, _Parser):
            p.epilog_head = _types_line
        p.add_argument("--json", action="store_true", help="machine-readable JSON output")
        p.set_defaults(func=func, uses=USES[name])
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
