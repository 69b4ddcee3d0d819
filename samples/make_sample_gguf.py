#!/usr/bin/env python3
"""Generate the bundled sample model ``samples/liang-ai/liang-ai.gguf``.

The result is a *tiny* llama-architecture GGUF with random weights (fixed seed)
and a real byte-level BPE tokenizer, so llama.cpp (and anything built on it)
can load it, tokenize, chat-template and generate -- the output is gibberish,
which is fine for tests and demos.

Everything is deterministic: running this script twice gives byte-identical
files, and the committed file is exactly what this script writes.

Usage::

    python samples/make_sample_gguf.py [OUT]     # default: samples/liang-ai/liang-ai.gguf

Layout follows ``convert_hf_to_gguf.py``: 2-D matrices F16, 1-D norms F32,
``general.file_type`` = 1 (MOSTLY_F16), ``general.quantization_version`` = 2.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import gguf
import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "liang-ai" / "liang-ai.gguf"

# --------------------------------------------------------------------------- hyper-parameters
NAME = "liang-ai"
SEED = 20240501
N_EMBD = 256  # multiple of 256 so K-quants (block size 256) apply to every matrix
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2  # grouped-query attention
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 512  # multiple of 256 too (ffn_down has ne[0] = N_FF)
N_CTX_TRAIN = 4096
ROPE_FREQ_BASE = 10000.0
RMS_EPS = 1e-6
INIT_STD = 0.02
N_MERGES = 384  # upper bound; training stops early once no pair occurs twice

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# ChatML, written exactly as in Hugging Face tokenizer_config.json files: the
# "\n" inside the Jinja string literals are backslash-n escapes for Jinja.
CHAT_TEMPLATE = (
    r"{% for message in messages %}"
    r"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    r"{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Fixed training text for the BPE merges: some Chinese, some English, some chat markup.
CORPUS = """\
你是由崔亮创建的AI助手，你叫亮仔，你回答问题时需要使用中文。
你好！我是亮仔，一个由崔亮创建的人工智能助手。我会使用中文回答你的问题。
请问你有什么问题需要我帮助吗？我可以回答问题、写代码、翻译文本和总结文章。
今天天气很好，我们一起去公园散步吧。这个模型是一个很小的测试模型。
中文是世界上使用人数最多的语言之一。人工智能正在改变我们的生活和工作。
模型文件定义了系统提示、温度参数和上下文长度。你需要使用中文回答问题。
Hello! I am Liang Zai, an AI assistant created by Cui Liang.
This is a tiny test model with random weights. It is not meant to be useful.
The model is built from a Modelfile and a GGUF file, without a daemon.
The quick brown fox jumps over the lazy dog. The dog is not amused.
We use a small byte-level BPE tokenizer so that llama.cpp can load the model.
Set the temperature to 0.5 and the context length to 4096 tokens.
What is the answer? The answer is 42. Let's write some code in Python:
def hello(name): return "Hello, " + name + "!"
for i in range(10): print(i, i * i)
It's the user's model; they'll change the system prompt and the parameters.
A tokenizer splits text into tokens, and the model predicts the next token.
Please answer the question in Chinese. Thank you for your help!
The weights are random, so the answers will be random text as well.
Quantization makes the model smaller: Q4_K_M, Q5_K_M, Q8_0 and F16 are common types.
我们可以把这个模型量化成更小的文件，然后在本地电脑上运行。
请用中文回答：你叫什么名字？你是由谁创建的？你能帮我做什么？
学习编程需要时间和耐心。今天我们学习如何使用模型文件创建自己的模型。
北京是中国的首都。上海是中国最大的城市之一。我喜欢喝茶，也喜欢看书。
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
Hello, who are you?<|im_end|>
<|im_start|>assistant
I am a helpful assistant. How can I help you today?<|im_end|>
<|im_start|>user
你是谁？<|im_end|>
<|im_start|>assistant
我是亮仔，由崔亮创建的AI助手。有什么可以帮你的吗？<|im_end|>
"""


# --------------------------------------------------------------------------- tokenizer
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


BYTE_TO_UNICODE = bytes_to_unicode()

# Approximation of the Qwen2 pre-tokenizer regex (the one llama.cpp uses for
# tokenizer.ggml.pre = "qwen2") with the standard library `re`: \p{L} ~ [^\W\d_],
# \p{N} ~ \d.  It only decides which byte sequences the trainer may merge.
PRETOKENIZE = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)"
    r"|(?:[^\r\n\w]|_)?[^\W\d_]+"
    r"|\d"
    r"| ?(?:[^\s\w]|_)+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def _merge_pair(symbols: list[str], a: str, b: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Learn up to ``n_merges`` byte-level BPE merges from ``text``, deterministically.

    Each step merges the most frequent adjacent pair (ties: lexicographically
    smallest pair); training stops early when no pair occurs at least twice.
    Special tokens are cut out of the text first, as a real tokenizer would.
    """
    chunks = re.split("|".join(map(re.escape, SPECIAL_TOKENS)), text)
    words = Counter(
        "".join(BYTE_TO_UNICODE[b] for b in piece.encode("utf-8"))
        for chunk in chunks
        for piece in PRETOKENIZE.findall(chunk)
    )
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            symbols = splits[word]
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append(best)
        for word in splits:
            splits[word] = _merge_pair(splits[word], *best)
    return merges


def build_vocab() -> tuple[list[str], list[int], list[str]]:
    """Return (tokens, token_types, merges) in GGUF form.

    ids 0..255 are the byte tokens (id == byte value), then one token per new
    merge result in merge order, then the special (control) tokens.
    """
    tokens = [BYTE_TO_UNICODE[b] for b in range(256)]
    seen = set(tokens)
    merges = train_bpe(CORPUS, N_MERGES)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    token_types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += SPECIAL_TOKENS
    token_types += [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    return tokens, [int(t) for t in token_types], [f"{a} {b}" for a, b in merges]


# --------------------------------------------------------------------------- weights
class _Init:
    """Uniform(-a, a) weights with standard deviation INIT_STD.

    Built straight from PCG64's raw 64-bit output (whose stream NumPy keeps
    stable), not from Generator distribution methods, so the bytes do not
    depend on the NumPy version.
    """

    def __init__(self, seed: int) -> None:
        self.bitgen = np.random.PCG64(seed)

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        raw = np.asarray(self.bitgen.random_raw(rows * cols), dtype=np.uint64)
        u = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # [0, 1)
        half_width = INIT_STD * 3.0**0.5  # Uniform(-a, a) has std a / sqrt(3)
        weights: np.ndarray = ((2.0 * u - 1.0) * half_width).astype(np.float16)
        return weights.reshape(rows, cols)


def _norm() -> np.ndarray:
    return np.ones(N_EMBD, dtype=np.float32)


def write_sample(out: Path) -> None:
    tokens, token_types, merges = build_vocab()
    n_vocab = len(tokens)
    n_embd_kv = HEAD_DIM * N_HEAD_KV

    w = gguf.GGUFWriter(out, "llama")  # writes general.architecture itself
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(NAME)
    w.add_vocab_size(n_vocab)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(ROPE_FREQ_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index(BOS_TOKEN))
    w.add_eos_token_id(tokens.index(EOS_TOKEN))
    w.add_pad_token_id(tokens.index(PAD_TOKEN))
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    # numpy arrays are row-major (ne[1], ne[0]): a matrix mapping d_in -> d_out is (d_out, d_in).
    init = _Init(SEED)
    w.add_tensor("token_embd.weight", init.matrix(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", _norm())
        w.add_tensor(f"blk.{i}.attn_q.weight", init.matrix(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_k.weight", init.matrix(n_embd_kv, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_v.weight", init.matrix(n_embd_kv, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_output.weight", init.matrix(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", _norm())
        w.add_tensor(f"blk.{i}.ffn_gate.weight", init.matrix(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", init.matrix(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", init.matrix(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", _norm())
    w.add_tensor("output.weight", init.matrix(n_vocab, N_EMBD))

    out.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print((__doc__ or "").strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    out = Path(args[0]) if args else DEFAULT_OUT
    write_sample(out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
