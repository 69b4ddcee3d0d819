"""How much memory llama.cpp needs to run a GGUF: weights, KV cache, compute buffer.

The formulas (stated in docs/memory.md) follow llama.cpp's own allocation (llama-context,
llama-kv-cache, llama-kv-cache-iswa, the per-architecture hyper-parameter loaders):

- the context is padded to a multiple of 256 cells; with ``parallel`` sequences each
  gets ``pad(n_ctx / parallel, 256)`` cells (llama.cpp's default, non-unified cache);
- every attention layer ``il`` holds ``cells * row_size(type_k, key_length(il) *
  head_count_kv(il))`` bytes of K and the same with ``value_length`` for V;
- a sliding-window layer (gemma2/3, cohere2, gpt-oss, llama4's chunked layers, ...)
  holds only ``pad(min(cells_per_seq, window + n_ubatch), 256)`` cells per sequence;
  which layers slide is the GGUF's ``sliding_window_pattern`` (a count or a per-layer
  array) or the architecture's default pattern;
- an encoder (``{arch}.attention.causal`` false: BERT and kin) keeps no KV cache;
- the compute buffer is an estimate of the largest set of activations alive at once
  for one micro-batch of ``n_ubatch`` tokens (see ``compute_buffer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gguf import Keys
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from modelkit.errors import ModelkitError
from modelkit.gguf_file.info import GGUFInfo

CELL_PAD = 256  # llama.cpp pads the context and the SWA cache to this many cells
N_UBATCH = 512  # llama.cpp's default micro-batch
F32 = 4
KV_TYPES = {"f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0,
            "q4_0": GGMLQuantizationType.Q4_0, "f32": GGMLQuantizationType.F32,
            "bf16": GGMLQuantizationType.BF16}


@dataclass(frozen=True)
class SlidingWindow:
    """An architecture's sliding-window layers, as its llama.cpp loader sets them."""

    pattern: int  # every ``pattern``-th layer is full (0: all slide)
    dense_first: bool = False  # the full layer opens each group instead of closing it
    default_window: int = 0  # used when the GGUF names none
    needs_window_key: bool = False  # without a window in the GGUF the model is not SWA


SLIDING = {
    "gemma2": SlidingWindow(2, default_window=4096),
    "gemma3": SlidingWindow(6, needs_window_key=True),
    "gemma3n": SlidingWindow(5),
    "gemma-embedding": SlidingWindow(6),
    "cohere2": SlidingWindow(4),
    "gpt-oss": SlidingWindow(2),
    "llama4": SlidingWindow(4, default_window=8192),  # chunked attention; window 0: none
    "exaone4": SlidingWindow(4, default_window=4096, needs_window_key=True),
    "olmo2": SlidingWindow(4, needs_window_key=True),
    "smallthinker": SlidingWindow(4, dense_first=True, needs_window_key=True),
}


def pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def row_size(qtype: GGMLQuantizationType, n: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return n // block * size


@dataclass(frozen=True)
class HyperParameters:
    """What the KV cache and the compute buffer depend on, per layer where it varies."""

    n_layer: int
    n_embd: int
    n_vocab: int
    n_ff: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    key_length: tuple[int, ...]
    value_length: tuple[int, ...]
    swa: tuple[bool, ...]
    window: int  # sliding window in tokens (0: none)
    n_expert_used: int
    causal: bool  # False: an encoder (BERT and kin), which keeps no KV cache

    @classmethod
    def of(cls, info: GGUFInfo) -> HyperParameters:
        arch = info.architecture
        get = info.arch_value
        n_layer = _int(get(Keys.LLM.BLOCK_COUNT), 0)
        n_embd = _int(get(Keys.LLM.EMBEDDING_LENGTH), 0)
        n_head = _per_layer(get(Keys.Attention.HEAD_COUNT), n_layer, 0)
        n_head_kv = _per_layer(get(Keys.Attention.HEAD_COUNT_KV), n_layer, None) or n_head
        top = max(n_head, default=0)
        head_dim = n_embd // top if top else 0
        k_full = _int(get(Keys.Attention.KEY_LENGTH), head_dim)
        v_full = _int(get(Keys.Attention.VALUE_LENGTH), head_dim)
        k_swa = _int(get(Keys.Attention.KEY_LENGTH_SWA), k_full)
        v_swa = _int(get(Keys.Attention.VALUE_LENGTH_SWA), v_full)
        swa, window = _sliding(info, arch, n_layer)
        tokens = Keys.Tokenizer.LIST
        n_vocab = (info.metadata.array_length(tokens) if tokens in info.metadata else None
                   ) or _int(get(Keys.LLM.VOCAB_SIZE), 0)
        ff = get(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH) or get(Keys.LLM.FEED_FORWARD_LENGTH)
        n_ff = max(_per_layer(ff, n_layer, 0) or (0,))
        return cls(n_layer, n_embd, n_vocab, n_ff, n_head, n_head_kv,
                   tuple(k_swa if s else k_full for s in swa),
                   tuple(v_swa if s else v_full for s in swa), swa, window,
                   _int(get(Keys.LLM.EXPERT_USED_COUNT), 0),
                   get(Keys.Attention.CAUSAL) is not False)


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default


def _per_layer(value: Any, n_layer: int, default: int | None) -> tuple[int, ...]:
    """A per-layer count: an array as given, a scalar repeated, or ``default``."""
    if isinstance(value, list):
        return tuple(int(v) for v in value[:n_layer])
    if isinstance(value, (int, float)):
        return (int(value),) * n_layer
    return () if default is None else (default,) * n_layer


def _sliding(info: GGUFInfo, arch: str, n_layer: int) -> tuple[tuple[bool, ...], int]:
    rule = SLIDING.get(arch)
    if rule is None:
        return (False,) * n_layer, 0
    window_value = info.arch_value(Keys.Attention.SLIDING_WINDOW)
    if window_value is None and rule.needs_window_key:
        return (False,) * n_layer, 0
    window = _int(window_value, rule.default_window)
    if window == 0:
        return (False,) * n_layer, 0
    pattern = info.arch_value(Keys.Attention.SLIDING_WINDOW_PATTERN)
    if isinstance(pattern, list):  # one flag a layer
        flags = tuple(bool(p) for p in pattern[:n_layer])
        return flags + (False,) * (n_layer - len(flags)), window
    n = _int(pattern, rule.pattern)
    if rule.dense_first:
        return tuple(n == 0 or il % n != 0 for il in range(n_layer)), window
    return tuple(n == 0 or il % n < n - 1 for il in range(n_layer)), window


@dataclass(frozen=True)
class MemoryEstimate:
    n_ctx: int  # cells of a full-attention layer, all sequences (padded)
    swa_cells: int  # cells of a sliding-window layer, all sequences (0: none)
    parallel: int
    kv_type: str
    n_ubatch: int
    weights: int
    kv_full: int  # bytes of the full-attention layers' K and V
    kv_swa: int  # bytes of the sliding-window layers' K and V
    compute: int
    hparams: HyperParameters

    @property
    def kv(self) -> int:
        return self.kv_full + self.kv_swa

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def kv_cache(hp: HyperParameters, n_ctx: int, *, parallel: int = 1, kv_type: str = "f16",
             n_ubatch: int = N_UBATCH, swa_full: bool = False) -> tuple[int, int, int, int]:
    """``(cells, swa_cells, full_bytes, swa_bytes)`` of llama.cpp's KV cache; with
    ``swa_full`` the sliding-window layers get as many cells as the others (the
    library's default, which llama-server and llama-cli turn off)."""
    qtype = KV_TYPES[kv_type]
    per_seq = pad(pad(n_ctx, CELL_PAD) // parallel, CELL_PAD)
    cells = per_seq * parallel
    if not hp.causal:
        return cells, 0, 0, 0
    swa_cells = (cells if swa_full else pad(min(per_seq, hp.window + n_ubatch), CELL_PAD)
                 * parallel) if any(hp.swa) else 0
    full = swa = 0
    block = GGML_QUANT_SIZES[qtype][0]
    for il in range(hp.n_layer):
        heads = hp.n_head_kv[il] if il < len(hp.n_head_kv) else 0
        k, v = hp.key_length[il] * heads, hp.value_length[il] * heads
        if k % block or v % block:
            raise ModelkitError(f"--kv-type {kv_type}: layer {il}'s K/V rows ({k}, {v}) are "
                                f"not a multiple of its block size {block}")
        layer = row_size(qtype, k) + row_size(qtype, v)
        if hp.swa[il]:
            swa += layer * swa_cells
        else:
            full += layer * cells
    return cells, swa_cells, full, swa


def compute_buffer(hp: HyperParameters, cells: int, swa_cells: int = 0,
                   n_ubatch: int = N_UBATCH) -> int:
    """An estimate of llama.cpp's CPU compute buffer for one micro-batch of ``n_ub``
    tokens (F32 activations, flash attention off): the largest of the attention step
    (the scores of every head over every cell, the softmax done in place, plus the
    attention masks, one row a token over every cell: one for the full layers and one
    for the sliding-window layers; with about six activations of ``n_embd`` alive: the
    residual, the normed input, Q, K, the attention output and its projection), the
    feed-forward step (gate, up and their product) and the output step (the logits of
    every token)."""
    n_ub = min(n_ubatch, cells) if cells else n_ubatch
    n_head = max(hp.n_head, default=0)
    act = hp.n_embd * n_ub * F32
    attention = ((n_head + 1) * cells + swa_cells) * n_ub * F32 + 6 * act
    ffn_width = hp.n_ff * max(1, hp.n_expert_used)
    ffn = 3 * ffn_width * n_ub * F32 + 2 * act
    output = hp.n_vocab * n_ub * F32 + 2 * act
    return max(attention, ffn, output)


def estimate_memory(info: GGUFInfo, *, n_ctx: int | None = None, parallel: int = 1,
                    kv_type: str = "f16", n_ubatch: int = N_UBATCH, swa_full: bool = False,
                    extra: Sequence[GGUFInfo] = ()) -> MemoryEstimate:
    """The memory to run ``info`` (and ``extra`` GGUFs such as a projector, whose weights
    count too) with a context of ``n_ctx`` tokens (default: the model's training
    context) shared by ``parallel`` sequences, with a ``kv_type`` cache."""
    if kv_type not in KV_TYPES:
        raise ModelkitError(f"unknown KV cache type {kv_type!r} "
                            f"(one of {', '.join(KV_TYPES)})")
    if parallel < 1:
        raise ModelkitError(f"--parallel must be 1 or more, not {parallel}")
    ctx = n_ctx if n_ctx is not None else (info.context_length or 2048)
    if ctx < 1:
        raise ModelkitError(f"--ctx must be 1 or more, not {ctx}")
    hp = HyperParameters.of(info)
    cells, swa_cells, full, swa = kv_cache(hp, ctx, parallel=parallel, kv_type=kv_type,
                                           n_ubatch=n_ubatch, swa_full=swa_full)
    weights = sum(t.n_bytes for g in (info, *extra) for t in g.tensors)
    return MemoryEstimate(cells, swa_cells, parallel, kv_type, n_ubatch, weights, full, swa,
                          compute_buffer(hp, cells, swa_cells, n_ubatch), hp)
