"""Benchmark: ``modelkit convert`` against llama.cpp's convert_hf_to_gguf.py (+ llama-quantize)
and against the I/O floor.

    python bench/convert.py [--params 1e9] [--outtypes f16,q8_0,q4_K_M] [--keep DIR]
                            [--reference-convert convert_hf_to_gguf.py]
                            [--reference-quantize llama-quantize] [--json]

1. Builds a deterministic synthetic Hugging Face llama folder of about ``--params``
   parameters (default 1 billion): config.json, a small SentencePiece tokenizer (the
   vocabulary padded to 32000 by config.json), BF16 weights in 2 safetensors shards with
   ``model.safetensors.index.json``, written tensor by tensor.
2. Times ``modelkit convert --outtype f16``, ``--outtype q8_0`` and the one-pass
   ``--outtype q4_K_M``, each in its own process, with its CPU time (user + system,
   children included) and the peak resident memory of the process tree (sampled from
   /proc every 20 ms).
3. When the reference tools are found (on PATH or by the --reference flags), times
   ``convert_hf_to_gguf.py --outtype f16|q8_0`` and, for q4_K_M, convert f16 followed by
   ``llama-quantize`` (two steps, the F16 file on disk in between), and says whether
   modelkit's output is byte-identical to the reference's (sha256 of the whole file).
4. Measures ``cp`` + ``sha256sum`` of the shards as the I/O floor.

Targets (from the issue): faster than the reference for f16 and q8_0, the one-pass q4_K_M
faster than the reference's two steps, peak RSS below the reference's. Never run in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantize import measure, sha256_file, synthetic_dims  # noqa: E402

from modelkit.quant.kernels.floats import fp32_to_bf16_bits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_HEAD, N_HEAD_KV = 16, 4


def _tensors(params: float) -> tuple[dict[str, object], list[tuple[str, tuple[int, ...]]]]:
    n_embd, n_ff, n_layer, n_vocab = synthetic_dims(params)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": n_embd, "intermediate_size": n_ff, "num_hidden_layers": n_layer,
              "num_attention_heads": N_HEAD, "num_key_value_heads": N_HEAD_KV,
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "vocab_size": n_vocab, "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    kv = n_embd // N_HEAD * N_HEAD_KV
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (n_vocab, n_embd)), ("model.norm.weight", (n_embd,)),
        ("lm_head.weight", (n_vocab, n_embd))]
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (n_embd,)),
                   (p + "post_attention_layernorm.weight", (n_embd,)),
                   (p + "self_attn.q_proj.weight", (n_embd, n_embd)),
                   (p + "self_attn.k_proj.weight", (kv, n_embd)),
                   (p + "self_attn.v_proj.weight", (kv, n_embd)),
                   (p + "self_attn.o_proj.weight", (n_embd, n_embd)),
                   (p + "mlp.gate_proj.weight", (n_ff, n_embd)),
                   (p + "mlp.up_proj.weight", (n_ff, n_embd)),
                   (p + "mlp.down_proj.weight", (n_embd, n_ff))]
    return config, shapes


def _write_shard(path: Path, shapes: list[tuple[str, tuple[int, ...]]],
                 rng: np.random.Generator) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _name, shape in shapes:
            if len(shape) == 1:
                x = 1 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
            else:
                x = 0.02 * rng.standard_normal(shape, dtype=np.float32)
            f.write(fp32_to_bf16_bits(x).tobytes())


def build_folder(folder: Path, params: float) -> int:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    config, shapes = _tensors(params)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    model = io.BytesIO()
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world 1 2 3 !?"] * 50
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model,
                                   vocab_size=300, model_type="bpe", byte_fallback=True,
                                   minloglevel=2, hard_vocab_limit=False)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
         "eos_token": "</s>"}))
    half = len(shapes) // 2
    parts = [shapes[:half], shapes[half:]]
    rng = np.random.default_rng(1234)
    weight_map = {}
    for i, part in enumerate(parts, 1):
        name = f"model-{i:05d}-of-00002.safetensors"
        _write_shard(folder / name, part, rng)
        weight_map.update({n: name for n, _ in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}))
    return sum(int(np.prod(s)) for _, s in shapes)


def _find(flag: str | None, *names: str) -> str | None:
    if flag:
        return flag
    for n in names:
        if found := shutil.which(n):
            return found
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=float, default=1e9)
    ap.add_argument("--outtypes", default="f16,q8_0,q4_K_M")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep the files")
    ap.add_argument("--reference-convert", help="path of convert_hf_to_gguf.py")
    ap.add_argument("--reference-quantize", help="path of llama-quantize")
    ap.add_argument("--reference-python",
                    help="the Python that runs convert_hf_to_gguf.py (one with torch)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="modelkit-bench-convert-"))
    src = work / "synthetic-hf"
    if not (src / "config.json").exists():
        t0 = time.monotonic()
        n = build_folder(src, args.params)
        print(f"built {src} ({n / 1e9:.2f}B parameters, BF16, 2 shards) in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    shards = sorted(src.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rows: list[dict[str, object]] = []

    def run(tool: str, outtype: str, cmd: list[str], out: Path | None) -> None:
        # cpu: user + system time of the command and every process it waited for (a
        # pool's workers, torch's threads): the figure that a busy machine distorts least
        secs, cpu, rss, rc = measure(cmd, env)
        row = {"tool": tool, "outtype": outtype, "seconds": round(secs, 2),
               "cpu_seconds": round(cpu, 2),
               "peak_rss_mib": round(rss / 1024, 1), "ok": rc == 0,
               "output_bytes": out.stat().st_size if out and out.exists() else None}
        rows.append(row)
        print(json.dumps(row), flush=True)

    floor = work / "floor"
    floor.mkdir(exist_ok=True)
    run("cp+sha256sum", "-", ["sh", "-c", f"cp {' '.join(map(str, shards))} {floor} && "
                                          f"sha256sum {floor}/*.safetensors > /dev/null"], None)
    shutil.rmtree(floor, ignore_errors=True)

    ref_convert = _find(args.reference_convert, "convert_hf_to_gguf.py", "convert-hf-to-gguf")
    ref_quantize = _find(args.reference_quantize, "llama-quantize")
    # The reference converter needs torch and transformers, which modelkit never installs:
    # it usually runs from a venv of its own.
    ref_python = args.reference_python or sys.executable
    for outtype in args.outtypes.split(","):
        out = work / f"modelkit-{outtype}.gguf"
        run("modelkit", outtype, [sys.executable, "-m", "modelkit", "convert", str(src), "-o",
                                  str(out), "--outtype", outtype], out)
        if ref_convert is None:
            out.unlink(missing_ok=True)
            continue
        ref_out = work / f"reference-{outtype}.gguf"
        if outtype in ("f16", "q8_0", "bf16", "f32"):
            run("convert_hf_to_gguf", outtype, [ref_python, ref_convert, str(src),
                                                "--outtype", outtype, "--outfile",
                                                str(ref_out)], ref_out)
        elif ref_quantize is not None:
            f16 = work / "reference-f16-step.gguf"
            script = (f"{ref_python} {ref_convert} {src} --outtype f16 --outfile {f16} && "
                      f"{ref_quantize} {f16} {ref_out} {outtype}")
            run("convert_hf_to_gguf+llama-quantize", outtype, ["sh", "-c", script], ref_out)
            f16.unlink(missing_ok=True)
        if out.exists() and ref_out.exists():
            same = sha256_file(out) == sha256_file(ref_out)
            print(f"{outtype}: output identical to the reference's: {same}", flush=True)
            rows[-1]["identical"] = same
        out.unlink(missing_ok=True)
        ref_out.unlink(missing_ok=True)
    if ref_convert is None:
        print("reference convert_hf_to_gguf.py not found: only modelkit was timed")
    summary = {"params": args.params, "input_bytes": size, "runs": rows}
    if args.json:
        print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
