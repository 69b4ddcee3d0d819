"""Architectures the golden set lacks, on tiny generated HF folders: names, shapes, KVs
and transforms checked against the converter's rules (re-derived here independently),
outputs loaded back with gguf.GGUFReader."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hf_fixtures import (
    decoder_weights,
    norm,
    rand,
    to_bf16_bits,
    write_bpe,
    write_config,
    write_spm,
    write_weights,
)

from modelkit.convert import convert, plan_conversion
from modelkit.errors import ConvertError

Q = gguf.GGMLQuantizationType
DIMS = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_kv": 2, "head_dim": 16, "n_ff": 96}


def llama_config(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "vocab_size": 300, "bos_token_id": 1, "eos_token_id": 2}
    cfg.update(over)
    return cfg


def read(path: Path) -> tuple[dict[str, Any], dict[str, gguf.ReaderTensor], list[str]]:
    r = gguf.GGUFReader(path)
    kvs = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    return kvs, {t.name: t for t in r.tensors}, list(kvs)


def values(t: gguf.ReaderTensor) -> np.ndarray:
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type == Q.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(shape)
    if t.tensor_type == Q.F32:
        return np.asarray(t.data).view(np.float32).reshape(shape)
    if t.tensor_type == Q.BF16:
        bits = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    raise AssertionError(t.tensor_type)


def interleave_heads(w: np.ndarray, n_head: int) -> np.ndarray:
    """Independent re-derivation of llama's q/k permutation: within each head of d
    rows, new row 2i is old row i and new row 2i+1 is old row d/2 + i."""
    d = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


def bf16_round(x: np.ndarray) -> np.ndarray:
    return (to_bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def make_llama(folder: Path, *, dtype: str = "F16", shards: int = 1, **cfg: Any,
               ) -> dict[str, np.ndarray]:
    write_config(folder, llama_config(**cfg))
    write_spm(folder)
    w = decoder_weights(np.random.default_rng(0), n_vocab=300, **DIMS)
    write_weights(folder, w, dtype, shards)
    return w


def test_llama_sharded_bf16_permutes_q_and_k(tmp_path: Path) -> None:
    src = tmp_path / "Tiny-Llama-7B-Instruct"
    w = make_llama(src, dtype="BF16", shards=2)
    out = tmp_path / "out.gguf"
    result = convert(src, out, "auto")
    assert result.file_type == gguf.LlamaFileType.MOSTLY_BF16
    kv, tensors, _ = read(out)
    assert kv["general.architecture"] == "llama"
    assert kv["general.file_type"] == 32
    assert kv["general.name"] == "Tiny Llama 7B Instruct"
    # "7B" is far from the real count, so llama.cpp reads it as part of the finetune
    assert kv["general.finetune"] == "7b-Instruct" and kv["general.basename"] == "Tiny-Llama"
    assert kv["llama.vocab_size"] == 300 and kv["llama.rope.dimension_count"] == 16
    assert kv["llama.attention.key_length"] == 16  # LlamaConfig's head_dim default
    q = tensors["blk.1.attn_q.weight"]
    assert q.tensor_type == Q.BF16 and [int(d) for d in q.shape] == [64, 64]
    want_q = interleave_heads(bf16_round(w["model.layers.1.self_attn.q_proj.weight"]), 4)
    np.testing.assert_array_equal(values(q), want_q)
    want_k = interleave_heads(bf16_round(w["model.layers.0.self_attn.k_proj.weight"]), 2)
    np.testing.assert_array_equal(values(tensors["blk.0.attn_k.weight"]), want_k)
    want_v = bf16_round(w["model.layers.0.self_attn.v_proj.weight"])
    np.testing.assert_array_equal(values(tensors["blk.0.attn_v.weight"]), want_v)
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    # f16 from BF16 goes straight from the stored bits, q/k permuted as bits
    out16 = tmp_path / "out16.gguf"
    convert(src, out16, "f16")
    _, t16, _ = read(out16)
    for name, hf, heads in (("blk.1.attn_q.weight", "model.layers.1.self_attn.q_proj.weight", 4),
                            ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", 2),
                            ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", 0)):
        assert t16[name].tensor_type == Q.F16
        want = bf16_round(w[hf]).astype(np.float16)
        want = interleave_heads(want, heads) if heads else want
        np.testing.assert_array_equal(np.asarray(t16[name].data).view(np.uint16),
                                      want.view(np.uint16).reshape(t16[name].data.shape))
    # order: shards by file name, names sorted as strings within each shard
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    plan = plan_conversion(src, "f16")
    srcs = [p.tensor.source for p in plan.tensors]
    assert srcs == sorted(index, key=lambda n: (index[n], n))
    plan.model.close()


def test_mistral_has_no_head_dim_default(tmp_path: Path) -> None:
    src = tmp_path / "m"
    make_llama(src, architectures=["MistralForCausalLM"], model_type="mistral",
               sliding_window=4096)
    out = tmp_path / "m.gguf"
    convert(src, out, "f16")
    kv, tensors, _ = read(out)
    assert kv["general.architecture"] == "llama"
    assert "llama.attention.key_length" not in kv
    assert kv["llama.rope.dimension_count"] == 16
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.add_bos_token"] is True


def test_llama3_bpe_and_rope_freqs(tmp_path: Path) -> None:
    src = tmp_path / "l3"
    n_vocab = 300
    write_config(src, llama_config(vocab_size=n_vocab, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}))
    used = write_bpe(src)
    write_weights(src, decoder_weights(np.random.default_rng(1), n_vocab=n_vocab, **DIMS))
    with pytest.raises(ConvertError, match="pre-tokenizer not recognized .*hash [0-9a-f]{64}"):
        convert(src, tmp_path / "x.gguf", "f16")
    assert not (tmp_path / "x.gguf").exists()
    out = tmp_path / "l3.gguf"
    plan = plan_conversion(src, "f16", pre="llama-bpe")
    plan.model.close()
    assert plan.tensors[0].tensor.name == "rope_freqs.weight"
    from modelkit.convert import converter
    with open(out, "wb") as f:
        converter.write_plan(plan, f)
    kv, tensors, _ = read(out)
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "llama-bpe"
    toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(toks) == n_vocab
    assert toks[used] == f"[PAD{used}]" and types[used] == 5  # padded to vocab_size
    assert types[toks.index("<|endoftext|>")] == 3 and types[toks.index("<think>")] == 4
    assert kv["tokenizer.ggml.merges"][:2] == ["h e", "l l"]
    assert kv["tokenizer.ggml.add_bos_token"] is False  # ByteLevel post-processor
    freqs = values(tensors["rope_freqs.weight"])
    assert freqs.shape == (8,)
    for i, got in enumerate(freqs):  # the rule in double precision, to 1e-6
        freq = 1.0 / 500000.0 ** (2 * i / 16)
        wavelen = 2 * math.pi / freq
        if wavelen < 8192 / 4:
            want = 1.0
        elif wavelen > 8192 / 1:
            want = 8.0
        else:
            s = (8192 / wavelen - 1) / 3
            want = 1 / ((1 - s) / 8 + s)
        assert got == pytest.approx(want, rel=1e-6)


def test_qwen3_no_permutation_and_qk_norm(tmp_path: Path) -> None:
    src = tmp_path / "q3"
    write_config(src, {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
                       "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "num_hidden_layers": 2, "head_dim": 16,
                       "vocab_size": 300, "tie_word_embeddings": True})
    write_spm(src)
    w = decoder_weights(np.random.default_rng(2), n_vocab=300, lm_head=False, qk_norm=True,
                        **DIMS)
    write_weights(src, w, "F32")
    out = tmp_path / "q3.gguf"
    convert(src, out, "f32")
    kv, tensors, _ = read(out)
    assert kv["general.architecture"] == "qwen3"
    assert kv["qwen3.attention.key_length"] == 16 and kv["qwen3.context_length"] == 32768
    assert "output.weight" not in tensors
    np.testing.assert_array_equal(values(tensors["blk.0.attn_q.weight"]),
                                  w["model.layers.0.self_attn.q_proj.weight"])
    assert [int(d) for d in tensors["blk.1.attn_k_norm.weight"].shape] == [16]


@pytest.mark.parametrize("arch", ["qwen2_moe", "qwen3_moe"])
def test_qwen_moe_experts_stacked(arch: str, tmp_path: Path) -> None:
    src = tmp_path / arch
    n_exp, n_ff_exp, n_embd = 4, 32, 64
    cfg = {"architectures": ["Qwen2MoeForCausalLM" if arch == "qwen2_moe" else
                             "Qwen3MoeForCausalLM"], "model_type": arch,
           "hidden_size": n_embd, "intermediate_size": 96, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 300,
           "num_experts": n_exp, "num_experts_per_tok": 2, "moe_intermediate_size": n_ff_exp,
           "head_dim": 16}
    if arch == "qwen2_moe":
        cfg["shared_expert_intermediate_size"] = 48
    write_config(src, cfg)
    used = write_bpe(src)
    rng = np.random.default_rng(3)
    w = decoder_weights(rng, n_vocab=300, **DIMS)
    for i in range(2):
        p = f"model.layers.{i}.mlp."
        for k in ("gate_proj", "up_proj", "down_proj"):
            del w[p + k + ".weight"]
        w[p + "gate.weight"] = rand(rng, n_exp, n_embd)
        for e in range(n_exp):
            w[p + f"experts.{e}.gate_proj.weight"] = rand(rng, n_ff_exp, n_embd)
            w[p + f"experts.{e}.up_proj.weight"] = rand(rng, n_ff_exp, n_embd)
            w[p + f"experts.{e}.down_proj.weight"] = rand(rng, n_embd, n_ff_exp)
        if arch == "qwen2_moe":
            w[p + "shared_expert.gate_proj.weight"] = rand(rng, 48, n_embd)
            w[p + "shared_expert.up_proj.weight"] = rand(rng, 48, n_embd)
            w[p + "shared_expert.down_proj.weight"] = rand(rng, n_embd, 48)
            w[p + "shared_expert_gate.weight"] = rand(rng, 1, n_embd)
    write_weights(src, w, "F32")
    out = tmp_path / "moe.gguf"
    plan = plan_conversion(src, "f16", pre="qwen2")
    names = [p.tensor.name for p in plan.tensors]
    blk0 = [n for n in names if n.startswith("blk.0.ffn") and "exps" in n]
    assert blk0 == ["blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_exps.weight",
                    "blk.0.ffn_up_exps.weight"]
    from modelkit.convert import converter
    with open(out, "wb") as f:
        converter.write_plan(plan, f)
    plan.model.close()
    kv, tensors, _ = read(out)
    gguf_arch = arch.replace("_", "")
    assert kv["general.architecture"] == gguf_arch
    assert kv[f"{gguf_arch}.expert_count"] == n_exp
    assert kv[f"{gguf_arch}.expert_feed_forward_length"] == n_ff_exp
    assert kv["general.size_label"].startswith(f"{n_exp}x")
    down = tensors["blk.1.ffn_down_exps.weight"]
    assert [int(d) for d in down.shape] == [n_ff_exp, n_embd, n_exp]
    got = values(down)
    for e in range(n_exp):  # expert e is slice e, in expert-index order
        want = w[f"model.layers.1.mlp.experts.{e}.down_proj.weight"].astype(np.float16)
        np.testing.assert_array_equal(got[e], want.astype(np.float32))
    assert tensors["blk.0.ffn_gate_inp.weight"].tensor_type == Q.F32  # router stays F32
    if arch == "qwen2_moe":
        assert "blk.0.ffn_gate_inp_shexp.weight" in tensors
        assert tensors["blk.0.ffn_up_shexp.weight"].tensor_type == Q.F16
    assert len(kv["tokenizer.ggml.tokens"]) == 300 and used < 300


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3"])
def test_gemma_norms_plus_one(arch: str, tmp_path: Path) -> None:
    src = tmp_path / arch
    hf = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
          "gemma3": "Gemma3ForCausalLM"}[arch]
    cfg: dict[str, Any] = {"architectures": [hf], "model_type": arch if arch != "gemma3"
                           else "gemma3_text", "hidden_size": 64, "intermediate_size": 96,
                           "num_attention_heads": 4, "num_key_value_heads": 2,
                           "num_hidden_layers": 2, "head_dim": 16, "vocab_size": 300,
                           "max_position_embeddings": 8192, "rms_norm_eps": 1e-6}
    if arch == "gemma3":
        cfg.update(vocab_size=310, sliding_window=512, rope_local_base_freq=10000.0,
                   rope_theta=1000000.0)
    write_config(src, cfg)
    write_spm(src)
    rng = np.random.default_rng(4)
    w = decoder_weights(rng, n_vocab=cfg["vocab_size"], **DIMS)
    if arch != "gemma":
        for i in range(2):
            w[f"model.layers.{i}.pre_feedforward_layernorm.weight"] = norm(rng, 64)
            w[f"model.layers.{i}.post_feedforward_layernorm.weight"] = norm(rng, 64)
    w["model.embed_tokens.weight"] = rand(rng, cfg["vocab_size"] + 6, 64) if arch == "gemma3" \
        else w["model.embed_tokens.weight"]
    write_weights(src, w, "F16")
    out = tmp_path / "g.gguf"
    convert(src, out, "f16")
    kv, tensors, order = read(out)
    assert kv["general.architecture"] == arch
    # gemma 1/2 drop lm_head (always tied); gemma3 keeps it when present
    assert ("output.weight" in tensors) == (arch == "gemma3")
    got = values(tensors["blk.0.attn_norm.weight"])
    src_norm = w["model.layers.0.input_layernorm.weight"].astype(np.float16)
    np.testing.assert_array_equal(got, (src_norm + np.float16(1)).astype(np.float32))
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    assert kv["tokenizer.ggml.add_space_prefix"] is False
    params = [k for k in order if k.startswith(f"{arch}.")]
    if arch in ("gemma", "gemma2"):
        assert params[:4] == [f"{arch}.context_length", f"{arch}.embedding_length",
                              f"{arch}.block_count", f"{arch}.feed_forward_length"]
        assert f"{arch}.rope.freq_base" not in kv
    if arch == "gemma":
        assert kv["tokenizer.ggml.eot_token_id"] == 107
    if arch == "gemma2":
        assert kv["gemma2.attn_logit_softcapping"] == pytest.approx(50.0)
        assert "blk.1.post_attention_norm.weight" in tensors
    if arch == "gemma3":
        emb = tensors["token_embd.weight"]
        assert [int(d) for d in emb.shape] == [64, 310]  # cut to the real vocabulary
        assert kv["gemma3.rope.freq_base"] == pytest.approx(1e6)
        assert kv["gemma3.rope.freq_base_swa"] == pytest.approx(1e4)
        assert params.index("gemma3.context_length") < params.index("gemma3.embedding_length")


def test_phi3_fused_tensors_and_longrope(tmp_path: Path) -> None:
    src = tmp_path / "phi"
    long = [1.0 + i / 10 for i in range(8)]
    write_config(src, {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
                       "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                       "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 300,
                       "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                       "original_max_position_embeddings": 4096, "sliding_window": 2047,
                       "rope_scaling": {"type": "longrope", "long_factor": long,
                                        "short_factor": [1.0] * 8}})
    write_spm(src)
    rng = np.random.default_rng(5)
    w = {"model.embed_tokens.weight": rand(rng, 300, 64), "model.norm.weight": norm(rng, 64),
         "lm_head.weight": rand(rng, 300, 64)}
    for i in range(2):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(rng, 64)
        w[p + "post_attention_layernorm.weight"] = norm(rng, 64)
        w[p + "self_attn.qkv_proj.weight"] = rand(rng, 3 * 64, 64)
        w[p + "self_attn.o_proj.weight"] = rand(rng, 64, 64)
        w[p + "mlp.gate_up_proj.weight"] = rand(rng, 2 * 96, 64)
        w[p + "mlp.down_proj.weight"] = rand(rng, 64, 96)
    write_weights(src, w, "F32")
    out = tmp_path / "phi.gguf"
    convert(src, out, "f32")
    kv, tensors, order = read(out)
    assert order[:2] == ["general.architecture", "phi3.rope.scaling.attn_factor"]
    assert kv["phi3.rope.scaling.attn_factor"] == pytest.approx(
        math.sqrt(1 + math.log(32) / math.log(4096)), rel=1e-6)
    assert list(tensors)[:2] == ["rope_factors_long.weight", "rope_factors_short.weight"]
    np.testing.assert_allclose(values(tensors["rope_factors_long.weight"]), long, rtol=1e-7)
    assert [int(d) for d in tensors["blk.0.attn_qkv.weight"].shape] == [64, 192]
    assert [int(d) for d in tensors["blk.0.ffn_up.weight"].shape] == [64, 192]
    np.testing.assert_array_equal(values(tensors["blk.1.ffn_up.weight"]),
                                  w["model.layers.1.mlp.gate_up_proj.weight"])
    assert kv["phi3.rope.dimension_count"] == 16 and kv["phi3.attention.sliding_window"] == 2047


def test_spm_vocab_padded_to_config(tmp_path: Path) -> None:
    src = tmp_path / "pad"
    make_llama(src, vocab_size=320)
    out = tmp_path / "pad.gguf"
    # embeddings have 300 rows but config says 320: that is a shape error
    with pytest.raises(ConvertError, match="shape .* disagrees with config.json"):
        convert(src, out, "f16")
    assert not out.exists()
    w = decoder_weights(np.random.default_rng(6), n_vocab=320, **DIMS)
    write_weights(src, w, "F16")
    convert(src, out, "f16")
    kv, _, _ = read(out)
    toks, scores, types = (kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.scores"],
                           kv["tokenizer.ggml.token_type"])
    assert len(toks) == 320
    assert toks[300:] == [f"[PAD{i}]" for i in range(300, 320)]
    assert set(types[300:]) == {5} and set(scores[300:]) == {-10000.0}


def test_llama_hf_fast_tokenizer_without_tokenizer_model(tmp_path: Path) -> None:
    """A SentencePiece-style BPE tokenizer.json (byte fallback) converts as llama's own
    vocabulary: scores -1000, byte tokens BYTE, special ids CONTROL, no padding."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    src = tmp_path / "hf-fast"
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ("\u2581", "a", "b", "\u2581a"):
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\u2581", "a")], byte_fallback=True,
                               unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<s>", "</s>", "<unk>"])
    tok.add_tokens(["<extra>"])
    write_config(src, llama_config(vocab_size=len(vocab) + 1))
    tok.save(str(src / "tokenizer.json"))
    (src / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))
    write_weights(src, decoder_weights(np.random.default_rng(12), n_vocab=len(vocab) + 1,
                                       **DIMS))
    out = tmp_path / "fast.gguf"
    convert(src, out, "f16")
    kv, _, _ = read(out)
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.pre"] == "default"
    toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(toks) == len(vocab) + 1 and toks[-1] == "<extra>" and types[-1] == 4
    assert set(kv["tokenizer.ggml.scores"]) == {-1000.0}
    assert types[:4] == [3, 3, 3, 6] and types[vocab["\u2581a"]] == 1
    assert kv["tokenizer.ggml.bos_token_id"] == 1
