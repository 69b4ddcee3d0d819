"""Tests for modelkit.quant.policy: llama.cpp's per-tensor type choice."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import pytest
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from conftest import GOLDEN, golden_stems
from modelkit.errors import ImatrixError, QuantizationError, UnknownQuantTypeError
from modelkit.gguf_file import GGUFInfo, read_gguf
from modelkit.quant.file_types import (
    FILE_TYPES,
    ExtraFileType,
    ExtraType,
    block_size,
    default_tensor_type,
    file_type_from_id,
    ggml_type_from_id,
    ggml_type_name,
    menu_lines,
    parse_ggml_type,
    parse_quant_name,
    row_bytes,
    type_size,
)
from modelkit.quant.policy import (
    ImatrixRequiredError,
    ModelHParams,
    QuantOptions,
    QuantPlan,
    TensorSpec,
    fallback_warning,
    file_type_name,
    output_order,
    override_warning,
    parse_file_type,
    parse_tensor_type_option,
    plan_quantization,
    use_more_bits,
)

MIXES = GOLDEN / "mixes"
MODELS = golden_stems("mixes", "*.json")
FTYPES = ("q4_K_M", "q4_K_S", "q5_K_M", "q6_K", "q8_0", "q4_0")


# --------------------------------------------------------------------------------------
# Golden data: every tensor of 9 models x 6 ftypes
# --------------------------------------------------------------------------------------


_SOURCES: dict[str, tuple[list[TensorSpec], ModelHParams, dict[str, Any]]] = {}


def _load(model: str) -> tuple[list[TensorSpec], ModelHParams, dict[str, Any]]:
    if model not in _SOURCES:
        info = read_gguf(MIXES / f"{model}.gguf")
        specs = [TensorSpec(t.name, t.shape, t.type) for t in info.tensors]
        hparams = ModelHParams.from_kv(info.metadata)
        golden = json.loads((MIXES / f"{model}.json").read_text())
        _SOURCES[model] = (specs, hparams, golden)
    return _SOURCES[model]


@pytest.mark.golden("mixes")
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_golden_mix(model: str, ftype: str) -> None:
    specs, hparams, golden = _load(model)
    result = golden["results"][ftype]
    plan = plan_quantization(specs, hparams, parse_file_type(ftype))

    assert int(plan.file_type) == result["ftype"]
    got = [(c.name, c.target_type.name) for c in plan.choices]
    want = [(t["name"], t["type"]) for t in result["tensors"]]
    if got != want:
        diff = [
            f"{i}: got {g} want {w}"
            for i, (g, w) in enumerate(zip(got, want, strict=False))
            if g != w
        ]
        if len(got) != len(want):
            diff.append(f"length: got {len(got)} want {len(want)}")
        pytest.fail(f"{model} {ftype}: {len(diff)} tensor(s) differ:\n" + "\n".join(diff))
    assert plan.n_fallback == result["n_fallback"]
    assert sum(c.fallback for c in plan.choices) == plan.n_fallback

    source_types = {s.name: s.source_type for s in specs}
    shapes = {s.name: s.shape for s in specs}
    for c in plan.choices:
        assert c.quantize == (c.target_type != source_types[c.name]), c.name
    logs = [fallback_warning(c, shapes[c.name][0]) for c in plan.choices if c.fallback]
    assert logs == result["fallback_log"]


@pytest.mark.golden("mixes")
def test_golden_covers_all_models() -> None:
    assert len(MODELS) == 9


# --------------------------------------------------------------------------------------
# Golden data: every case of quant-menu/*.json (llama-quantize's whole menu and options)
# --------------------------------------------------------------------------------------

MENU = GOLDEN / "quant-menu"
MENU_MODELS = sorted(p.stem for p in MENU.glob("*.json")) if MENU.is_dir() else []
_TAKES_VALUE = ("--imatrix", "--include-weights", "--exclude-weights", "--output-tensor-type",
                "--token-embedding-type", "--tensor-type")


def menu_options(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """llama-quantize's arguments: options (before the positionals) and positionals."""
    opts: dict[str, list[str]] = {}
    i = 0
    while args[i].startswith("--"):
        if args[i] in _TAKES_VALUE:
            opts.setdefault(args[i], []).append(args[i + 1])
            i += 2
        else:
            opts.setdefault(args[i], [])
            i += 1
    return opts, args[i:]


@functools.cache
def _menu_model(model: str) -> tuple[dict[str, Any], GGUFInfo]:
    golden = json.loads((MENU / f"{model}.json").read_text())
    return golden, read_gguf(MENU / golden["source"]["file"])


def _menu_plan(model: str, case: str) -> tuple[dict[str, Any], QuantPlan | QuantizationError]:
    golden, info = _menu_model(model)
    result = golden["results"][case]
    specs = [TensorSpec(t.name, t.shape, t.type) for t in info.tensors]
    if result["source"] != "src":  # the requantize cases start from the plain Q8_0 file
        q8 = {t["name"]: T[t["type"]] for t in golden["results"]["Q8_0"]["tensors"]}
        specs = [TensorSpec(s.name, s.shape, q8[s.name]) for s in specs]
    opts, pos = menu_options(result["args"])
    try:
        name = parse_quant_name(pos[2])
        ott = opts.get("--output-tensor-type")
        tet = opts.get("--token-embedding-type")
        options = QuantOptions(
            has_imatrix="--imatrix" in opts, pure="--pure" in opts,
            quantize_output="--leave-output-tensor" not in opts,
            output_tensor_type=parse_ggml_type(ott[0]) if ott else None,
            token_embedding_type=parse_ggml_type(tet[0]) if tet else None,
            tensor_types=tuple(parse_tensor_type_option(x) for x in opts.get("--tensor-type", [])),
            only_copy=name.copy, allow_requantize="--allow-requantize" in opts)
        kv_ftype = info.metadata.get("general.file_type")
        plan = plan_quantization(specs, ModelHParams.from_kv(info.metadata), name.file_type,
                                 options, source_file_type=kv_ftype if isinstance(kv_ftype, int)
                                 else None)
    except QuantizationError as exc:
        return result, exc
    return result, plan


@pytest.mark.skipif(not MENU_MODELS and not os.environ.get("CI"),
                    reason=f"golden data not found at {MENU}")
def test_menu_golden_covers_every_case() -> None:
    assert len(MENU_MODELS) == 9
    counts = [len(json.loads((MENU / f"{m}.json").read_text())["results"]) for m in MENU_MODELS]
    assert sorted(counts) == [76] * 7 + [78] * 2


def _menu_cases() -> list[tuple[str, str]]:
    return [(m, c) for m in MENU_MODELS
            for c in json.loads((MENU / f"{m}.json").read_text())["results"]]


@pytest.mark.parametrize(("model", "case"), _menu_cases())
def test_menu_golden(model: str, case: str) -> None:
    result, plan = _menu_plan(model, case)
    if "error" in result:
        assert isinstance(plan, QuantizationError), f"{model} {case}: not refused"
        lines = " ".join(result["error"])
        if isinstance(plan, ImatrixRequiredError):
            assert f"offending tensor: {plan.tensor}" in lines
            assert f"target type: {ggml_type_name(plan.qtype)}" in lines
        elif isinstance(plan, UnknownQuantTypeError):
            assert "invalid ftype" in lines
        else:
            assert str(plan).split(": ")[-1] in lines, (str(plan), lines)
        return
    assert isinstance(plan, QuantPlan), f"{model} {case}: refused: {plan}"
    assert plan.file_type == result["general.file_type"]
    got = [(c.name, ggml_type_name(c.target_type).upper()) for c in plan.choices]
    want = [(t["name"], t["type"]) for t in result["tensors"]]
    assert got == want
    assert plan.n_fallback == result["n_fallback"]
    shapes = {t["name"]: t["shape"] for t in result["tensors"]}
    assert [fallback_warning(c, shapes[c.name][0]) for c in plan.choices
            if c.fallback] == result["fallback_log"]
    assert [override_warning(c) for c in plan.choices if c.override_from is not None] == [
        line.split(": ", 1)[1] for line in result["override_log"]]


# --------------------------------------------------------------------------------------
# Synthetic models for the rules in isolation
# --------------------------------------------------------------------------------------


def _llama(
    n_layer: int,
    *,
    n_embd: int = 256,
    n_ff: int = 512,
    tied: bool = False,
    src: T = T.F16,
    n_expert: int = 0,
) -> list[TensorSpec]:
    """A llama-shaped tensor list, in file (not output) order."""
    specs = [TensorSpec("token_embd.weight", (n_embd, 320), src)]
    for i in range(n_layer):
        p = f"blk.{i}."
        specs += [
            TensorSpec(p + "attn_norm.weight", (n_embd,), T.F32),
            TensorSpec(p + "attn_q.weight", (n_embd, 32), src),
            TensorSpec(p + "attn_k.weight", (n_embd, 32), src),
            TensorSpec(p + "attn_v.weight", (n_embd, 32), src),
            TensorSpec(p + "attn_output.weight", (n_embd, 32), src),
            TensorSpec(p + "ffn_norm.weight", (n_embd,), T.F32),
        ]
        if n_expert:
            specs += [
                TensorSpec(p + "ffn_gate_inp.weight", (n_embd, n_expert), T.F32),
                TensorSpec(p + "ffn_gate_exps.weight", (n_embd, 32, n_expert), src),
                TensorSpec(p + "ffn_up_exps.weight", (n_embd, 32, n_expert), src),
                TensorSpec(p + "ffn_down_exps.weight", (n_ff, 32, n_expert), src),
            ]
        else:
            specs += [
                TensorSpec(p + "ffn_gate.weight", (n_embd, 32), src),
                TensorSpec(p + "ffn_up.weight", (n_embd, 32), src),
                TensorSpec(p + "ffn_down.weight", (n_ff, 32), src),
            ]
    specs.append(TensorSpec("output_norm.weight", (n_embd,), T.F32))
    if not tied:
        specs.append(TensorSpec("output.weight", (n_embd, 320), src))
    return specs


def _hp(n_layer: int, arch: str = "llama", **kw: int) -> ModelHParams:
    return ModelHParams(architecture=arch, n_layer=n_layer, **kw)


def _types(plan: QuantPlan) -> dict[str, T]:
    return {c.name: c.target_type for c in plan.choices}


def _layers(plan: QuantPlan, suffix: str, t: T) -> list[int]:
    """Layer numbers whose ``blk.N.<suffix>`` got type t."""
    return [
        int(c.name.split(".")[1])
        for c in plan.choices
        if c.name.endswith(suffix) and c.target_type == t
    ]


USE_MORE_BITS_32 = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_use_more_bits_pattern() -> None:
    assert [i for i in range(32) if use_more_bits(i, 32)] == USE_MORE_BITS_32
    # n = 10: first eighth is layer 0, last eighth starts at 70/8 = 8
    assert [i for i in range(10) if use_more_bits(i, 10)] == [0, 3, 6, 8, 9]


def test_q4_k_m_attn_v_and_ffn_down_use_more_bits() -> None:
    plan = plan_quantization(_llama(32), _hp(32, n_head=8, n_head_kv=2), FT.MOSTLY_Q4_K_M)
    assert _layers(plan, "attn_v.weight", T.Q6_K) == USE_MORE_BITS_32
    assert _layers(plan, "ffn_down.weight", T.Q6_K) == USE_MORE_BITS_32
    others = set(range(32)) - set(USE_MORE_BITS_32)
    assert set(_layers(plan, "attn_v.weight", T.Q4_K)) == others
    types = _types(plan)
    assert types["blk.5.attn_q.weight"] == T.Q4_K
    assert types["blk.5.attn_k.weight"] == T.Q4_K
    assert types["blk.5.attn_output.weight"] == T.Q4_K
    assert types["token_embd.weight"] == T.Q4_K
    assert types["output.weight"] == T.Q6_K
    assert plan.n_fallback == 0


def test_attn_v_counter_follows_output_order_not_file_order() -> None:
    # blk.10 sorts after blk.9 numerically; a plain string sort would put it after blk.1
    specs = list(reversed(_llama(16)))
    plan = plan_quantization(specs, _hp(16), FT.MOSTLY_Q4_K_M)
    # n = 16: first eighth 0-1, last eighth 14-15, every third from 2: 4, 7, 10, 13
    assert _layers(plan, "attn_v.weight", T.Q6_K) == [0, 1, 4, 7, 10, 13, 14, 15]


def test_q4_k_s_rules() -> None:
    plan = plan_quantization(_llama(32), _hp(32), FT.MOSTLY_Q4_K_S)
    assert _layers(plan, "attn_v.weight", T.Q5_K) == [0, 1, 2, 3]
    assert _layers(plan, "ffn_down.weight", T.Q5_K) == [0, 1, 2, 3]
    assert _types(plan)["output.weight"] == T.Q6_K


def test_q5_k_m_and_q6_k_q8_0() -> None:
    plan = plan_quantization(_llama(32), _hp(32), FT.MOSTLY_Q5_K_M)
    assert _layers(plan, "attn_v.weight", T.Q6_K) == USE_MORE_BITS_32
    assert _layers(plan, "ffn_down.weight", T.Q6_K) == USE_MORE_BITS_32
    assert _types(plan)["blk.4.attn_v.weight"] == T.Q5_K

    q6 = _types(plan_quantization(_llama(8), _hp(8), FT.MOSTLY_Q6_K))
    assert {t for n, t in q6.items() if not n.endswith("norm.weight")} == {T.Q6_K}

    q8 = _types(plan_quantization(_llama(8), _hp(8), FT.MOSTLY_Q8_0))
    assert {t for n, t in q8.items() if not n.endswith("norm.weight")} == {T.Q8_0}


def test_q4_0_output_is_q6_k() -> None:
    types = _types(plan_quantization(_llama(4), _hp(4), FT.MOSTLY_Q4_0))
    assert types["output.weight"] == T.Q6_K
    assert types["token_embd.weight"] == T.Q4_0
    assert types["blk.0.attn_v.weight"] == T.Q4_0


@pytest.mark.parametrize(
    ("ft", "embd"),
    [
        (FT.MOSTLY_Q4_K_M, T.Q6_K),
        (FT.MOSTLY_Q4_K_S, T.Q6_K),
        (FT.MOSTLY_Q4_0, T.Q6_K),
        (FT.MOSTLY_Q8_0, T.Q8_0),
    ],
)
def test_tied_embeddings_get_output_rules(ft: FT, embd: T) -> None:
    tied = _types(plan_quantization(_llama(4, tied=True), _hp(4), ft))
    assert "output.weight" not in tied
    assert tied["token_embd.weight"] == embd
    untied = _types(plan_quantization(_llama(4), _hp(4), ft))
    assert untied["output.weight"] == embd
    assert (
        untied["token_embd.weight"]
        == {
            FT.MOSTLY_Q4_K_M: T.Q4_K,
            FT.MOSTLY_Q4_K_S: T.Q4_K,
            FT.MOSTLY_Q4_0: T.Q4_0,
            FT.MOSTLY_Q8_0: T.Q8_0,
        }[ft]
    )


@pytest.mark.parametrize(
    ("ft", "fallback"),
    [
        (FT.MOSTLY_Q4_K_M, T.Q5_0),
        (FT.MOSTLY_Q4_K_S, T.Q5_0),
        (FT.MOSTLY_Q5_K_M, T.Q5_1),
        (FT.MOSTLY_Q5_K_S, T.Q5_1),
        (FT.MOSTLY_Q6_K, T.Q8_0),
    ],
)
def test_fallback_for_256_block_types(ft: FT, fallback: T) -> None:
    # hidden 384 is a multiple of 32 but not of 256; n_ff 512 is fine
    plan = plan_quantization(_llama(2, n_embd=384), _hp(2), ft)
    types = _types(plan)
    assert types["blk.1.attn_q.weight"] == fallback
    assert types["token_embd.weight"] == fallback
    assert types["blk.0.ffn_down.weight"] != fallback  # ne[0] = 512
    # output: ne[0] does not fit the default type's block -> Q8_0 directly, not counted
    assert types["output.weight"] == T.Q8_0
    out = next(c for c in plan.choices if c.name == "output.weight")
    assert not out.fallback
    # per layer: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up; plus token_embd
    assert plan.n_fallback == 2 * 6 + 1
    c = next(c for c in plan.choices if c.name == "blk.0.attn_q.weight")
    assert c.fallback and c.fallback_from is not None and c.quantize


def test_q6_k_attn_v_fallback_is_q8_0() -> None:
    types = _types(plan_quantization(_llama(8, n_embd=384), _hp(8), FT.MOSTLY_Q4_K_M))
    assert types["blk.0.attn_v.weight"] == T.Q8_0  # Q6_K (use_more_bits) -> Q8_0
    assert types["blk.1.attn_v.weight"] == T.Q5_0  # Q4_K -> Q5_0


def test_output_fallback_counted_under_q4_0() -> None:
    plan = plan_quantization(_llama(2, n_embd=384), _hp(2), FT.MOSTLY_Q4_0)
    out = next(c for c in plan.choices if c.name == "output.weight")
    # 384 % 32 == 0, so the output rule picks Q6_K, which then falls back to Q8_0
    assert out.target_type == T.Q8_0 and out.fallback and out.fallback_from == T.Q6_K
    assert plan.n_fallback == 1
    assert fallback_warning(out, 384) == (
        "warning: output.weight                        - ncols    384 not divisible by 256 "
        "(required for type    q6_K) -> falling back to    q8_0"
    )


@pytest.mark.parametrize("ft", [FT.MOSTLY_Q8_0, FT.MOSTLY_Q4_0, FT.MOSTLY_Q4_K_M])
def test_row_length_not_multiple_of_32_falls_back_to_f16(ft: FT) -> None:
    # llama.cpp no longer aborts here: even a Q8_0 target becomes F16, counted
    f32 = plan_quantization(_llama(2, n_ff=1000, src=T.F32), _hp(2), ft)
    down = next(c for c in f32.choices if c.name == "blk.0.ffn_down.weight")
    assert down.target_type == T.F16 and down.fallback and down.quantize  # F32 -> F16
    assert f32.n_fallback == 2
    msg = fallback_warning(down, 1000)
    assert msg is not None and "(WARNING: must use F16 due to unusual shape)" in msg

    f16 = plan_quantization(_llama(2, n_ff=1000), _hp(2), ft)
    down = next(c for c in f16.choices if c.name == "blk.0.ffn_down.weight")
    assert down.target_type == T.F16 and down.fallback and not down.quantize  # copied
    assert f16.n_fallback == 2


def test_eight_experts() -> None:
    hp = _hp(6, n_expert=8, n_head=8, n_head_kv=2)
    for ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q6_K, FT.MOSTLY_Q4_0):
        types = _types(plan_quantization(_llama(6, n_expert=8), hp, ft))
        for i in range(6):
            assert types[f"blk.{i}.attn_v.weight"] == T.Q8_0
            assert types[f"blk.{i}.attn_k.weight"] == T.Q8_0
            assert types[f"blk.{i}.ffn_gate_inp.weight"] == T.F32
        want_out = T.Q5_K if ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q4_K_S) else None
        if want_out is not None:
            assert types["blk.0.attn_output.weight"] == want_out
    # ffn_down_exps takes its layer from the name: n = 6 -> use_more_bits at 2 and 5
    plan = plan_quantization(_llama(6, n_expert=8), hp, FT.MOSTLY_Q4_K_M)
    assert _layers(plan, "ffn_down_exps.weight", T.Q6_K) == [2, 5]


def test_four_experts_are_not_eight() -> None:
    hp = _hp(6, n_expert=4)
    types = _types(plan_quantization(_llama(6, n_expert=4), hp, FT.MOSTLY_Q4_K_M))
    assert types["blk.1.attn_k.weight"] == T.Q4_K
    assert types["blk.1.attn_output.weight"] == T.Q4_K


def test_expert_layer_must_parse_from_name() -> None:
    specs = [*_llama(2, n_expert=4), TensorSpec("ffn_down_extra.weight", (512, 32), T.F16)]
    with pytest.raises(QuantizationError, match="Failed to determine layer"):
        plan_quantization(specs, _hp(2, n_expert=4), FT.MOSTLY_Q4_K_M)
    specs = [*_llama(2, n_expert=4), TensorSpec("blk.7.ffn_up_exps.weight", (256, 32), T.F16)]
    with pytest.raises(QuantizationError, match=r"Bad layer 7 .* Must be in \[0, 2\)"):
        plan_quantization(specs, _hp(2, n_expert=4), FT.MOSTLY_Q4_K_M)


def test_falcon_rules() -> None:
    n = 32
    specs = _llama(n)
    plan = plan_quantization(specs, _hp(n, arch="falcon"), FT.MOSTLY_Q4_K_M)
    types = _types(plan)
    assert types["output.weight"] == T.Q8_0
    # first n/16 layers Q6_K, then use_more_bits Q5_K, else Q4_K
    assert _layers(plan, "ffn_down.weight", T.Q6_K) == [0, 1]
    assert _layers(plan, "ffn_down.weight", T.Q5_K) == [i for i in USE_MORE_BITS_32 if i >= 2]
    q4ks = plan_quantization(specs, _hp(n, arch="falcon"), FT.MOSTLY_Q4_K_S)
    assert _layers(q4ks, "ffn_down.weight", T.Q5_K) == []
    assert _types(q4ks)["output.weight"] == T.Q8_0


def test_fused_qkv_is_attn_v_like() -> None:
    specs = [
        TensorSpec("token_embd.weight", (256, 320), T.F16),
        TensorSpec("output.weight", (256, 320), T.F16),
    ] + [TensorSpec(f"blk.{i}.attn_qkv.weight", (256, 96), T.F16) for i in range(8)]
    plan = plan_quantization(specs, _hp(8, arch="phi3"), FT.MOSTLY_Q4_K_M)
    assert _layers(plan, "attn_qkv.weight", T.Q6_K) == [i for i in range(8) if use_more_bits(i, 8)]
    assert _layers(plan, "attn_qkv.weight", T.Q4_K) == [
        i for i in range(8) if not use_more_bits(i, 8)
    ]
    plan = plan_quantization(specs, _hp(8, arch="phi3"), FT.MOSTLY_Q4_K_S)
    assert _layers(plan, "attn_qkv.weight", T.Q5_K) == [0, 1, 2, 3]


def test_70b_bumps_attn_v() -> None:
    specs = _llama(80)
    gqa = _hp(80, n_head=64, n_head_kv=8)
    assert gqa.is_70b
    plan = plan_quantization(specs, gqa, FT.MOSTLY_Q4_K_M)
    assert set(_layers(plan, "attn_v.weight", T.Q5_K)) == {
        i for i in range(80) if not use_more_bits(i, 80)
    }
    assert _layers(plan, "attn_v.weight", T.Q4_K) == []
    # LLaMA-65B (no GQA) is not "70B"
    mha = _hp(80, n_head=64, n_head_kv=64)
    assert not mha.is_70b
    plan = plan_quantization(specs, mha, FT.MOSTLY_Q4_K_M)
    assert _layers(plan, "attn_v.weight", T.Q5_K) == []
    assert _hp(80, arch="qwen2").is_70b and not _hp(79, arch="qwen2").is_70b
    assert not _hp(80, arch="llama", n_head=64, n_head_kv=8, n_expert=8).is_70b


def test_tensors_never_quantized() -> None:
    specs = [
        TensorSpec("token_embd.weight", (256, 320), T.F16),
        TensorSpec("output.weight", (256, 320), T.F16),
        TensorSpec("position_embd.weight", (256, 512), T.F32),
        TensorSpec("token_types.weight", (256, 2), T.F32),
        TensorSpec("rope_freqs.weight", (32,), T.F32),
        TensorSpec("blk.0.attn_q.bias", (256, 4), T.F32),  # not named *weight
        TensorSpec("blk.0.attn_norm.weight", (256,), T.F32),
        TensorSpec("blk.0.attn_q_norm.weight", (256, 2), T.F32),  # 2-D norm
        TensorSpec("blk.0.ffn_gate_inp.weight", (256, 8), T.F32),
        TensorSpec("blk.0.attn_q.weight", (256, 1, 1), T.F16),  # 1-D after trailing 1s
        TensorSpec("blk.0.ssm_conv1d.weight", (4, 256), T.F32),
        TensorSpec("v.position_embd.weight", (256, 64), T.F16),
        TensorSpec("blk.0.attn_k.weight", (256, 32), T.F32),
    ]
    plan = plan_quantization(specs, _hp(1), FT.MOSTLY_Q4_K_M)
    for c in plan.choices:
        if c.name in ("token_embd.weight", "output.weight", "blk.0.attn_k.weight"):
            assert c.quantize
        else:
            assert not c.quantize and not c.fallback, c.name
            assert c.target_type == next(s.source_type for s in specs if s.name == c.name)


def test_five_character_name_quirk() -> None:
    # llama.cpp's `rfind("weight") == size() - 6` is npos == npos for 5-character names
    specs = [TensorSpec("abcde", (256, 4), T.F16), TensorSpec("abcdef", (256, 4), T.F16)]
    types = _types(plan_quantization(specs, _hp(1), FT.MOSTLY_Q8_0))
    assert types == {"abcde": T.Q8_0, "abcdef": T.F16}


def test_float_file_types() -> None:
    specs = _llama(2, src=T.F32, n_embd=384, n_ff=1000)
    plan = plan_quantization(specs, _hp(2), FT.MOSTLY_F16)
    assert plan.n_fallback == 0
    for c in plan.choices:
        want = T.F32 if c.name.endswith("norm.weight") else T.F16
        assert c.target_type == want, c.name
    plan = plan_quantization(_llama(2), _hp(2), FT.ALL_F32)
    assert all(c.target_type == T.F32 for c in plan.choices)
    assert sum(c.quantize for c in plan.choices) == 2 * 7 + 2


def test_requantize_and_unconvertible_sources() -> None:
    specs = [TensorSpec("output.weight", (256, 320), T.Q8_0)]
    plan = plan_quantization(specs, _hp(1), FT.MOSTLY_Q4_K_M)  # Ollama passes the flag
    assert plan.choices[0].target_type == T.Q6_K
    with pytest.raises(QuantizationError, match="output.weight: requantizing from type q8_0"):
        plan_quantization(specs, _hp(1), FT.MOSTLY_Q4_K_M, allow_requantize=False)
    # same type: copied, no requantization needed
    plan = plan_quantization(specs, _hp(1), FT.MOSTLY_Q8_0, allow_requantize=False)
    assert not plan.choices[0].quantize
    with pytest.raises(QuantizationError, match="cannot dequantize/convert tensor type i32"):
        plan_quantization([TensorSpec("blk.0.x.weight", (256, 4), T.I32)], _hp(1), FT.MOSTLY_Q8_0)


def test_duplicate_names_rejected() -> None:
    specs = [TensorSpec("output.weight", (256, 320), T.F16)] * 2
    with pytest.raises(QuantizationError, match="duplicated"):
        plan_quantization(specs, _hp(1), FT.MOSTLY_Q8_0)


def test_nvfp4_is_not_a_file_type() -> None:
    with pytest.raises(QuantizationError, match="invalid output file type 39"):
        plan_quantization(_llama(1), _hp(1), FT.MOSTLY_NVFP4)
    with pytest.raises(UnknownQuantTypeError, match="'nvfp4'"):
        parse_quant_name("nvfp4")


def test_requires_imatrix_on_final_type() -> None:
    # IQ2_XXS needs an imatrix: the first tensor in output order that gets it is named.
    with pytest.raises(ImatrixRequiredError) as info:
        plan_quantization(_llama(2), _hp(2), FT.MOSTLY_IQ2_XXS)
    assert (info.value.tensor, info.value.qtype) == ("blk.0.attn_k.weight", T.IQ2_XXS)
    assert "llama-imatrix" in str(info.value) and isinstance(info.value, ImatrixError)
    # ...but not when every such tensor falls back to IQ4_NL (ne0 = 384).
    plan = plan_quantization(_llama(2, n_embd=384, n_ff=384), _hp(2), FT.MOSTLY_IQ2_XXS)
    assert T.IQ2_XXS not in _types(plan).values()
    # Q2_K needs one only inside a Q2_K_S file; output and token_embd never do.
    with pytest.raises(ImatrixRequiredError, match="q2_K"):
        plan_quantization(_llama(2), _hp(2), FT.MOSTLY_Q2_K_S)
    plan_quantization(_llama(2), _hp(2), FT.MOSTLY_Q2_K)
    opts = QuantOptions(has_imatrix=True)
    plan = plan_quantization(_llama(2), _hp(2), FT.MOSTLY_Q2_K_S, opts)
    assert [c.name for c in plan.choices if c.requires_imatrix][0] == "blk.0.attn_k.weight"


def test_overrides() -> None:
    specs = _llama(4)
    opts = QuantOptions(tensor_types=(parse_tensor_type_option("ATTN_V=Q8_0"),
                                      parse_tensor_type_option(r"blk\.[0-1]\.ffn=iq4_nl"),
                                      parse_tensor_type_option("attn=f16")),
                        output_tensor_type=T.Q8_0, token_embedding_type=T.Q4_0)
    types = _types(plan_quantization(specs, _hp(4), FT.MOSTLY_Q4_K_M, opts))
    assert types["blk.3.attn_v.weight"] == T.Q8_0  # first match wins, pattern lower-cased
    assert types["blk.3.attn_q.weight"] == T.F16
    assert types["blk.1.ffn_up.weight"] == T.IQ4_NL and types["blk.2.ffn_up.weight"] == T.Q4_K
    assert (types["output.weight"], types["token_embd.weight"]) == (T.Q8_0, T.Q4_0)
    pure = _types(plan_quantization(specs, _hp(4), FT.MOSTLY_Q4_K_M, QuantOptions(pure=True)))
    assert {t for n, t in pure.items() if n.endswith("weight") and "norm" not in n} == {T.Q4_K}
    leave = plan_quantization(specs, _hp(4), FT.MOSTLY_Q4_K_M,
                              QuantOptions(quantize_output=False))
    assert not next(c for c in leave.choices if c.name == "output.weight").quantize
    copy = plan_quantization(specs, _hp(4), FT.ALL_F32, QuantOptions(only_copy=True))
    assert not any(c.quantize for c in copy.choices)
    assert copy.file_type == int(FT.MOSTLY_F16) | 1024  # guessed: most tensors are F16


@pytest.mark.parametrize(("text", "match"), [
    ("attn_v", "malformed"), ("=q8_0", "missing tensor name"),
    ("attn_v=", "missing quantization type"), ("attn_v=q9_9", "invalid quantization type"),
    ("attn_(v=q8_0", "invalid regular expression"), ("(?P<x>a)=q8_0", "invalid regular"),
])
def test_bad_tensor_type_options(text: str, match: str) -> None:
    with pytest.raises(QuantizationError, match=match):
        parse_tensor_type_option(text)


def test_plan_is_pure() -> None:
    specs = _llama(8)
    before = list(specs)
    a = plan_quantization(specs, _hp(8), FT.MOSTLY_Q4_K_M)
    b = plan_quantization(specs, _hp(8), FT.MOSTLY_Q4_K_M)
    assert a == b and specs == before


def test_output_order() -> None:
    names = [
        "blk.10.attn_q.weight",
        "output.weight",
        "blk.2.ffn_up.weight",
        "blk.2.attn_v.weight",
        "token_embd.weight",
        "blk.1.attn_q.weight",
        "output_norm.weight",
        "blkx.weight",
    ]
    assert output_order(names) == [
        "blkx.weight",
        "output.weight",
        "output_norm.weight",
        "token_embd.weight",
        "blk.1.attn_q.weight",
        "blk.2.attn_v.weight",
        "blk.2.ffn_up.weight",
        "blk.10.attn_q.weight",
    ]
    plan = plan_quantization(_llama(12), _hp(12), FT.MOSTLY_Q8_0)
    assert [c.name for c in plan.choices] == output_order(s.name for s in _llama(12))


# --------------------------------------------------------------------------------------
# File type names
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ft"),
    [
        ("q4_K_M", FT.MOSTLY_Q4_K_M), ("q4_k_m", FT.MOSTLY_Q4_K_M), ("Q4_K", FT.MOSTLY_Q4_K_M),
        ("q3_k", FT.MOSTLY_Q3_K_M), ("Q5_K", FT.MOSTLY_Q5_K_M), ("q2_K_S", FT.MOSTLY_Q2_K_S),
        ("iq4_xs", FT.MOSTLY_IQ4_XS), ("IQ3_M", FT.MOSTLY_IQ3_M), ("tq1_0", FT.MOSTLY_TQ1_0),
        ("mxfp4_moe", FT.MOSTLY_MXFP4_MOE), ("q2_0", ExtraFileType.MOSTLY_Q2_0),
        ("f16", FT.MOSTLY_F16), ("BF16", FT.MOSTLY_BF16), ("F32", FT.ALL_F32),
        ("15", FT.MOSTLY_Q4_K_M), ("Q4_K_L", FT.MOSTLY_Q4_K_M),
    ],
)
def test_parse_file_type(text: str, ft: FT) -> None:
    assert parse_file_type(text) == ft


def test_menu_names_and_shorthands() -> None:
    assert len(FILE_TYPES) == 39 and FILE_TYPES[-1] == "COPY"
    for name in FILE_TYPES:
        assert parse_quant_name(name).name == name.replace("Q3_K", "Q3_K").upper() or name in (
            "Q3_K", "Q4_K", "Q5_K")
    copy = parse_quant_name("copy")
    assert copy.copy and copy.file_type == FT.ALL_F32
    q4kl = parse_quant_name("q4_k_l")
    assert (q4kl.file_type, q4kl.output_type, q4kl.token_embedding_type) == (
        FT.MOSTLY_Q4_K_M, T.Q8_0, T.Q8_0)
    with pytest.raises(UnknownQuantTypeError, match="modelkit quantize --list"):
        parse_quant_name("q4_k_x")
    lines = menu_lines()
    assert any(" Q4_K_M " in x and "4.500 bpw q4_K" in x for x in lines)
    assert any(x.strip().startswith("Q4_K_L") for x in lines)


def test_ggml_types_and_q2_0() -> None:
    assert parse_ggml_type("q5_k") == T.Q5_K and parse_ggml_type("IQ4_NL") == T.IQ4_NL
    assert parse_ggml_type("q2_0") == ExtraType.Q2_0 and ggml_type_name(ExtraType.Q2_0) == "q2_0"
    assert (block_size(ExtraType.Q2_0), type_size(ExtraType.Q2_0)) == (64, 18)
    assert row_bytes(ExtraType.Q2_0, 256) == 72 and row_bytes(T.Q4_K, 512) == 288
    assert default_tensor_type(ExtraFileType.MOSTLY_Q2_0) == ExtraType.Q2_0
    with pytest.raises(QuantizationError, match="invalid ggml_type 'q9'"):
        parse_ggml_type("q9")
    # the ids a GGUF's tensor table holds: gguf's types with a block size, and ours
    assert ggml_type_from_id(42) is ExtraType.Q2_0 and ggml_type_from_id(12) is T.Q4_K
    assert ggml_type_from_id(0) is T.F32 and ggml_type_from_id(1000) is None
    assert file_type_from_id(41) is ExtraFileType.MOSTLY_Q2_0
    assert file_type_from_id(15) is FT.MOSTLY_Q4_K_M
    with pytest.raises(QuantizationError, match="invalid output file type 999"):
        file_type_from_id(999)


def test_file_type_name() -> None:
    assert file_type_name(FT.MOSTLY_Q4_K_M) == "Q4_K_M"
    assert file_type_name(FT.MOSTLY_Q8_0) == "Q8_0"
    assert file_type_name(FT.MOSTLY_F16) == "F16"
    assert file_type_name(FT.ALL_F32) == "F32"
    assert file_type_name(FT.MOSTLY_IQ2_XXS) == "IQ2_XXS"
    assert file_type_name(ExtraFileType.MOSTLY_Q2_0) == "Q2_0"


# --------------------------------------------------------------------------------------
# Hyper-parameters from KV
# --------------------------------------------------------------------------------------


def test_hparams_from_kv() -> None:
    hp = ModelHParams.from_kv(
        {
            "general.architecture": "llama",
            "llama.block_count": 80,
            "llama.attention.head_count": 64,
            "llama.attention.head_count_kv": 8,
        }
    )
    assert hp == ModelHParams("llama", 80, 0, 64, 8, 0)
    assert hp.n_gqa == 8 and hp.is_70b

    hp = ModelHParams.from_kv(
        {
            "general.architecture": "qwen2moe",
            "qwen2moe.block_count": 4,
            "qwen2moe.expert_count": 8,
            "qwen2moe.attention.head_count": [16, 16, 16, 16],
        }
    )
    assert (hp.n_expert, hp.n_head, hp.n_head_kv) == (8, 16, 16)  # head_count_kv -> n_head

    with pytest.raises(QuantizationError, match="key not found in model: gemma.block_count"):
        ModelHParams.from_kv({"general.architecture": "gemma"})
    with pytest.raises(QuantizationError, match="general.architecture"):
        ModelHParams.from_kv({})
