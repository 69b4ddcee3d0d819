"""float32 <-> float16 / bfloat16, ggml's conversions bit for bit: the one home of them.

F16 is ``ggml_fp32_to_fp16_row`` (IEEE round to nearest even, overflow to inf, every
NaN -> the quiet NaN 0x7E00 with its sign); BF16 is ``ggml_fp32_to_bf16_row_ref`` (the
top 16 bits rounded half to even, a NaN keeps its top bits with the quiet bit 0x40
forced). Widening to float32 is exact for both.

``FLOAT_TYPES`` maps F32/F16/BF16 to their element size; ``encode_floats`` /
``decode_floats`` convert whole ``(rows, n_per_row)`` arrays (no blocks: one element is
one "block" of ``GGML_QUANT_SIZES`` (1, size)).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.common import F32Array, U8Array, U16Array

T = GGMLQuantizationType
FLOAT_TYPES: dict[GGMLQuantizationType, int] = {T.F32: 4, T.F16: 2, T.BF16: 2}


def fp32_to_fp16_bits(f: np.ndarray) -> U16Array:
    """``GGML_FP32_TO_FP16`` of each value: numpy's IEEE cast (the same rounding) with
    ggml's NaN."""
    f = np.asarray(f, dtype=np.float32)
    bits: U16Array = f32_to_f16_values(f).view(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        sign = (f.view(np.uint32) >> np.uint32(16)).astype(np.uint16) & np.uint16(0x8000)
        bits[nan] = sign[nan] | np.uint16(0x7E00)
    return bits


def fp16_bytes(f: F32Array) -> U8Array:
    """float32 (n,) -> (n, 2): the little-endian bytes of ggml's fp16 of each value."""
    return fp32_to_fp16_bits(f).astype("<u2").view(np.uint8).reshape(-1, 2)


def fp16_to_f32(b: U8Array) -> F32Array:
    """(n, 2) little-endian fp16 bytes -> float32 (n,), an exact widening."""
    return f16_to_f32_values(np.ascontiguousarray(b).view("<f2")[:, 0])


def fp32_to_bf16_bits(f: np.ndarray) -> U16Array:
    """``GGML_FP32_TO_BF16`` of each value (round half to even on the top 16 bits)."""
    u = np.ascontiguousarray(f, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    out: U16Array = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(64)).astype(np.uint16)
    return out


def bf16_to_f32(bits: np.ndarray) -> F32Array:
    """bfloat16 bit patterns (any shape) -> float32, exact."""
    wide = np.ascontiguousarray(bits).view(np.uint16).astype(np.uint32) << np.uint32(16)
    values: F32Array = wide.view(np.float32)
    return values


def encode_floats(qtype: GGMLQuantizationType, x: F32Array) -> U8Array:
    """float32 (rows, n) -> the little-endian bytes of F32/F16/BF16 (rows, n * size)."""
    rows = x.shape[0]
    if qtype == T.F32:
        out = np.ascontiguousarray(x, dtype="<f4")
    elif qtype == T.F16:
        out = fp32_to_fp16_bits(x).astype("<u2", copy=False)
    else:
        out = fp32_to_bf16_bits(x).astype("<u2", copy=False)
    return np.ascontiguousarray(out).view(np.uint8).reshape(rows, -1)


def decode_floats(qtype: GGMLQuantizationType, data: np.ndarray) -> F32Array:
    """F32/F16/BF16 data -> float32 of the same element shape.

    ``data`` holds the values (float32, float16, uint16 BF16 bit patterns) or the raw
    little-endian bytes as uint8 (the last axis is then ``size`` times longer)."""
    arr = np.ascontiguousarray(data)
    if arr.dtype == np.uint8:
        arr = arr.view({T.F32: "<f4", T.F16: "<f2", T.BF16: "<u2"}[qtype])
    if qtype == T.BF16:
        return bf16_to_f32(arr)
    if arr.dtype == np.float16:
        return f16_to_f32_values(arr)
    return arr.astype(np.float32)


# BF16 -> F16 without numpy's float16 cast (scalar code, ~4 ns a value here). A bfloat16
# whose magnitude is a normal float16 (2**-14 <= |x| < 2**16: its 15 low bits, the
# exponent and 7-bit mantissa, in [_F16_NORMAL_LO, _F16_NORMAL_HI)) is exactly a float16:
# same sign, exponent rebased from 127 to 15, mantissa padded with 3 zero bits, so integer
# arithmetic gives it. Every other value (zero, float16 subnormals, overflow, inf, NaN)
# takes numpy's cast itself, so the result is numpy's bit for bit whatever its rounding
# and NaN rules.
_F16_NORMAL_LO, _F16_NORMAL_HI = 113 << 7, 143 << 7
_REBASE = (112 << 10) & 0xFFFF  # (127 - 15) << 10, as uint16 arithmetic wraps it
_PIECE = 1 << 17  # values per pass: the few temporaries stay in the CPU cache


def _bf16_outside_f16_normals(b: U16Array, scratch: U16Array) -> np.ndarray:
    """Flat indices of the bfloat16 patterns ``b`` that are not normal float16 values."""
    np.bitwise_and(b, 0x7FFF, out=scratch)
    np.subtract(scratch, _F16_NORMAL_LO, out=scratch)
    return np.flatnonzero(scratch >= _F16_NORMAL_HI - _F16_NORMAL_LO)


def _numpy_f16_of_bf16(b: U16Array) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return bf16_to_f32(b).astype(np.float16)


def bf16_to_f16_bits(bits: np.ndarray) -> U16Array:
    """``bf16_to_f32(bits).astype(np.float16)`` as uint16 bit patterns (what the
    reference converter writes for a BF16 tensor at --outtype f16), bit for bit."""
    src = np.ascontiguousarray(bits).view(np.uint16)
    flat = src.reshape(-1)
    out: U16Array = np.empty(src.shape, dtype=np.uint16)
    dst = out.reshape(-1)
    scratch = np.empty(min(flat.size, _PIECE), dtype=np.uint16)
    for lo in range(0, flat.size, _PIECE):
        b, o = flat[lo:lo + _PIECE], dst[lo:lo + _PIECE]
        s = scratch[:b.size]
        # b << 3, as a multiply (numpy vectorises that for uint16, not the shift): the
        # sign and the exponent's top bits fall off.
        np.multiply(b, 8, out=o)
        np.subtract(o, _REBASE, out=o)
        np.bitwise_and(b, 0x8000, out=s)
        np.bitwise_or(o, s, out=o)
        odd = _bf16_outside_f16_normals(b, s)
        if odd.size:
            o[odd] = _numpy_f16_of_bf16(b[odd]).view(np.uint16)
    return out


def bf16_to_f16_to_f32(bits: np.ndarray) -> F32Array:
    """``bf16_to_f32(bits).astype(np.float16).astype(np.float32)``, bit for bit: the
    float32 values of the F16 file a BF16 tensor converts to (what llama-quantize then
    reads), without the float16 round trip for the values it leaves unchanged."""
    values = bf16_to_f32(bits)
    flat_bits = np.ascontiguousarray(bits).view(np.uint16).reshape(-1)
    flat = values.reshape(-1)
    scratch = np.empty(min(flat.size, _PIECE), dtype=np.uint16)
    for lo in range(0, flat.size, _PIECE):
        b = flat_bits[lo:lo + _PIECE]
        odd = _bf16_outside_f16_normals(b, scratch[:b.size])
        if odd.size:
            flat[lo + odd] = _numpy_f16_of_bf16(b[odd]).astype(np.float32)
    return values


def bf16_requantized(bits: np.ndarray) -> U16Array:
    """``fp32_to_bf16_bits(bf16_to_f32(bits))``: BF16 through float32 and back, which
    only quiets NaNs."""
    out: U16Array = np.array(bits, dtype=np.uint16, copy=True, order="C")
    nan = np.flatnonzero((out & np.uint16(0x7FFF)) > np.uint16(0x7F80))
    if nan.size:
        out.reshape(-1)[nan] |= np.uint16(64)
    return out


# F16 -> F32 likewise: a normal float16 (exponent field 1..30) widens exactly by moving
# its fields up 13 bits and rebasing the exponent from 15 to 127; the sign comes along
# through sign extension (int16 -> int32, then shifted into bit 31). Zeros, subnormals,
# inf and NaN take numpy's cast.
_F16_NORMAL_BITS_LO, _F16_NORMAL_BITS_HI = 0x0400, 0x7C00
_F32_OF_F16_KEEP = 0x8FFFE000  # the sign bit and the 15 shifted exponent/mantissa bits


def f16_to_f32_values(values: np.ndarray) -> F32Array:
    """``values.astype(np.float32)`` for float16 values (or their uint16 bit patterns),
    bit for bit, without numpy's scalar float16 cast."""
    src = np.ascontiguousarray(values).view(np.int16)
    flat = src.reshape(-1)
    out: F32Array = np.empty(src.shape, dtype=np.float32)
    dst = out.reshape(-1).view(np.uint32)
    scratch = np.empty(min(flat.size, _PIECE), dtype=np.uint16)
    for lo in range(0, flat.size, _PIECE):
        h, o = flat[lo:lo + _PIECE], dst[lo:lo + _PIECE]
        s = scratch[:h.size]
        np.copyto(o, h, casting="unsafe")  # sign-extended: 0xFFFF8000 | bits if negative
        np.left_shift(o, 13, out=o)
        np.bitwise_and(o, _F32_OF_F16_KEEP, out=o)
        np.add(o, (127 - 15) << 23, out=o)
        np.bitwise_and(h.view(np.uint16), 0x7FFF, out=s)
        np.subtract(s, _F16_NORMAL_BITS_LO, out=s)
        odd = np.flatnonzero(s >= _F16_NORMAL_BITS_HI - _F16_NORMAL_BITS_LO)
        if odd.size:
            o[odd] = h[odd].view(np.float16).astype(np.float32).view(np.uint32)
    return out


# F32 -> F16 (numpy's cast, not ggml's: the reference converter uses numpy): a value
# whose magnitude rounds to a normal float16 (2**-14 <= |x| < 65520) is its top bits
# rebased from exponent 127 to 15 and rounded half to even on the 13 dropped bits (a
# carry into the exponent is right); everything else takes numpy's cast.
_F32_F16_NORMAL_LO, _F32_F16_NORMAL_HI = 0x38800000, 0x477FF000
_F32_F16_REBASE = (0xFFF - ((127 - 15) << 23)) & 0xFFFFFFFF  # round bias minus rebase


def f32_to_f16_values(values: np.ndarray) -> np.ndarray:
    """``values.astype(np.float16)`` for float32 values, bit for bit, without numpy's
    scalar float16 cast."""
    src = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    flat = src.reshape(-1)
    out = np.empty(src.shape, dtype=np.float16)
    dst = out.reshape(-1).view(np.uint16)
    n = min(flat.size, _PIECE)
    mag, work, sign = (np.empty(n, np.uint32), np.empty(n, np.uint32),
                       np.empty(n, np.uint16))
    for lo in range(0, flat.size, _PIECE):
        u, o = flat[lo:lo + _PIECE], dst[lo:lo + _PIECE]
        a, t, s = mag[:u.size], work[:u.size], sign[:u.size]
        np.bitwise_and(u, 0x7FFFFFFF, out=a)
        np.right_shift(a, 13, out=t)
        np.bitwise_and(t, 1, out=t)
        np.add(t, a, out=t)
        np.add(t, _F32_F16_REBASE, out=t)
        np.right_shift(t, 13, out=t)
        np.copyto(o, t, casting="unsafe")
        np.right_shift(u, 16, out=t)
        np.copyto(s, t, casting="unsafe")
        np.bitwise_and(s, 0x8000, out=s)
        np.bitwise_or(o, s, out=o)
        np.subtract(a, _F32_F16_NORMAL_LO, out=a)
        odd = np.flatnonzero(a >= _F32_F16_NORMAL_HI - _F32_F16_NORMAL_LO)
        if odd.size:
            with np.errstate(over="ignore", invalid="ignore"):
                o[odd] = u[odd].view(np.float32).astype(np.float16).view(np.uint16)
    return out
