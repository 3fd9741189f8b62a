"""The group-interleaved layout the decode kernels read, and its Triton kernels (batch-1 GEMV, 2-16 rows on
tensor cores, whole-matrix dequantize).

Why a second layout: in the stored (compressed-tensors) layout word ``w`` holds columns ``8w .. 8w+7``
(int4), so field ``j`` of consecutive words meets the activations at a stride of 8 columns: every field
needs its own strided gather of ``x`` (or a register reshape of the unpacked tile, which Triton lowers to
layout conversions through shared memory; the profile of the first kernels showed them bound by that,
0.74 TB/s). Interleaved inside each group of ``G`` columns (``GW = G / per_word`` words), field ``j`` of
word ``w`` holds column ``j * GW + w``: field ``j`` of consecutive words is then ``x`` at consecutive
columns, loaded as one vector, and every tile stays 2-D in the layout of the words' load (no reshape).
Scales are untouched (a group stays a group). ``interleave`` / ``deinterleave`` are exact inverses
(``tests/test_quant_interleaved.py``); the decode session interleaves each matrix ONCE, in place, on a GPU
with Triton, and ``QuantLinear`` gives back the stored words wherever they are read (``state_dict``, the
torch reference path), so files and the reader stay exactly compressed-tensors'.

The unpacking avoids int -> float conversions: field ``j`` is shifted to the top of the mantissa of 1.0,
giving ``f = 1 + q / 2^bits`` exactly, and ``q - 2^(bits-1) = 2^bits * (f - 1.5)``; the GEMV accumulates
``sum(f * x)`` and subtracts ``1.5 * sum(x)`` once per word (3 instructions per weight, float32 throughout;
the subtraction costs a few bits of float32, far below the bf16 output's rounding).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import triton_decode
from .format import QUANTIZE_ROW_CHUNK, QuantScheme, pack, require_row_major, unpack
from .format import dequantize as format_dequantize
from .format import quantize as format_quantize
from ...kernel_probe import run_probe
from ...triton_import import TRITON_IMPORT_ERROR


GEMV_AHEAD, GEMV_X2D = 1, 2  # a GEMV configuration's optional 5th number (MODE): see ``gemv``
# (BLOCK_N, BLOCK_W, num_warps, num_stages[, MODE]): the decode session times these per role
# (``decode_linears``); the defaults serve ``QuantLinear.forward`` outside it. BLOCK_W is halved where it does
# not divide a row. The GEMVs: the plain kernel's best two and the fastest of each mode per role at batch 1
# on the H200 (``bench/bench_quant_kernels.py``, 2026-12-04: x read in the words' layout
# won q/k/v, o and down for int4 and int8, the look-ahead alone won gate_up)
GEMV_CONFIGS: tuple[tuple[int, ...], ...] = (
    (16, 64, 4, 1), (64, 64, 4, 1), (64, 64, 4, 1, GEMV_AHEAD), (32, 64, 4, 1, GEMV_AHEAD),
    (8, 128, 2, 1, GEMV_X2D), (8, 128, 4, 1, GEMV_X2D), (4, 128, 4, 1, GEMV_X2D), (16, 128, 4, 1, GEMV_X2D),
    (64, 64, 4, 1, GEMV_X2D))
DOT_CONFIGS: tuple[tuple[int, int, int, int], ...] = ((32, 32, 4, 2), (64, 32, 4, 2), (32, 64, 4, 2),
                                                      (16, 64, 4, 2))
DEFAULT_GEMV, DEFAULT_DOT = GEMV_CONFIGS[0], DOT_CONFIGS[0]
DEQUANT_BLOCK = (32, 64)  # rows x words per dequantize program
PROBE_ROWS, PROBE_COLUMNS = 64, 512  # the one-off probe of ``kernel_problem``
PROBE_TOLERANCE = 1e-2  # relative error of the probe GEMV / dot against dequantize-then-matmul
FLOAT32_ONE_BITS, FLOAT32_MANTISSA_BITS = 0x3F800000, 23  # 1.0's bit pattern; a float32's stored mantissa bits

HAS_TRITON = triton_decode.HAS_TRITON
if HAS_TRITON:
    import triton
    import triton.language as tl

    from ..triton_decode import _prologue, _rms_factor, _rows_and_factor, _store_out

    ONE_BITS = tl.constexpr(FLOAT32_ONE_BITS)
    MANTISSA_BITS = tl.constexpr(FLOAT32_MANTISSA_BITS)
    ONE = tl.constexpr(1)


def _permuted(q: torch.Tensor, scheme: QuantScheme, inverse: bool) -> torch.Tensor:
    """Values [N, K] in column order -> in interleaved position order (or back with ``inverse``)."""
    rows, cols = q.shape
    per, gw = scheme.per_word, scheme.words_per_group
    inner = (gw, per) if inverse else (per, gw)
    return q.view(rows, cols // scheme.group_size, *inner).transpose(2, 3).reshape(rows, cols)


def _repacked(packed: torch.Tensor, scheme: QuantScheme, inverse: bool, out: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty_like(packed) if out is None else out
    for start in range(0, packed.shape[0], QUANTIZE_ROW_CHUNK):
        q = unpack(packed[start:start + QUANTIZE_ROW_CHUNK], scheme.bits)
        out[start:start + q.shape[0]] = pack(_permuted(q, scheme, inverse), scheme.bits)
    return out


def fits(packed: torch.Tensor) -> bool:
    """True when every kernel here takes rows of this many words: the dot kernel's blocks hold at least
    ``MIN_DOT_ROWS`` words, so a wider row must split into such blocks (a small test model's 24-word rows
    do not; those matrices keep the stored layout)."""
    words = packed.shape[1]
    return words <= triton_decode.MIN_DOT_ROWS or words % triton_decode.MIN_DOT_ROWS == 0


def interleave(packed: torch.Tensor, scheme: QuantScheme, out: torch.Tensor | None = None) -> torch.Tensor:
    """Stored words [N, W] -> interleaved words (``out`` may be ``packed`` itself: done by row chunks)."""
    return _repacked(packed, scheme, False, out)


def deinterleave(packed: torch.Tensor, scheme: QuantScheme, out: torch.Tensor | None = None) -> torch.Tensor:
    """Interleaved words -> the stored words, bit for bit."""
    return _repacked(packed, scheme, True, out)


def probe_matrix(device: str, bits: int, columns: int = PROBE_COLUMNS):
    """A kernel probe's matrix: a random bf16 [PROBE_ROWS, columns] quantized to ``bits``, as (scheme,
    interleaved words, scales, dequantized reference, the generator for the probe's inputs)."""
    scheme = QuantScheme(bits)
    gen = torch.Generator(device=device).manual_seed(bits)
    weight = torch.randn(PROBE_ROWS, columns, device=device, generator=gen).to(torch.bfloat16)
    packed, scale = format_quantize(weight, scheme)
    return scheme, interleave(packed, scheme), scale, format_dequantize(packed, scale, scheme), gen


def probe_disagrees(out: torch.Tensor, reference: torch.Tensor) -> bool:
    """A probe kernel's output off dequantize-then-matmul's by more than ``PROBE_TOLERANCE`` (relative)."""
    return float((out.float() - reference).norm() / reference.norm()) > PROBE_TOLERANCE


@lru_cache(maxsize=None)
def kernel_problem(device: str) -> str | None:
    """Why the interleaved kernels cannot be used on ``device`` (None when a probe of each agrees with the
    torch reference): the decode session then keeps the stored layout and ``kernels``' kernels."""
    if not HAS_TRITON:
        return f"Triton is unavailable ({TRITON_IMPORT_ERROR})"

    def probe() -> str | None:
        for bits in (4, 8):
            scheme, laid, scale, reference, gen = probe_matrix(device, bits)
            if not torch.equal(dequantize(laid, scale, scheme), reference):
                return f"the int{bits} dequantize kernel disagrees with the torch reference"
            x = torch.randn(triton_decode.MIN_DOT_ROWS, PROBE_COLUMNS, device=device, generator=gen).to(scale.dtype)
            want = x.float() @ reference.float().T
            got = (gemv(x[:1], laid, scale, scheme, DEFAULT_GEMV), dot(x, laid, scale, scheme, DEFAULT_DOT))
            if any(probe_disagrees(out, ref) for out, ref in zip(got, (want[:1], want))):
                return f"the int{bits} GEMV / dot kernels disagree with dequantize-then-matmul"
        return None

    return run_probe(device, "Interleaved int4 / int8 kernels", "the stored layout's kernels are used", probe)


if HAS_TRITON:

    @triton.jit
    def _unit_field(words, J: tl.constexpr, BITS: tl.constexpr):
        """``1 + q / 2^BITS`` (float32, exact) for field ``J`` of every word: the field moved to the top of the
        mantissa of 1.0 (a shift and one AND-OR; no conversion instruction)."""
        SHIFT: tl.constexpr = MANTISSA_BITS - BITS - BITS * J
        MASK: tl.constexpr = ((ONE << BITS) - 1) << (MANTISSA_BITS - BITS)
        if SHIFT >= 0:
            moved = words << SHIFT
        else:
            moved = words >> (-SHIFT)
        return ((moved & MASK) | ONE_BITS).to(tl.float32, bitcast=True)

    @triton.jit
    def _columns(wi, J: tl.constexpr, GROUP: tl.constexpr, GW: tl.constexpr):
        """The input column field ``J`` of words ``wi`` holds."""
        return (wi // GW) * GROUP + J * GW + wi % GW

    @triton.jit
    def _il_gemv_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, N, K, W, eps, stride_p, stride_s,
                        BITS: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, AHEAD: tl.constexpr, X2D: tl.constexpr):
        """out[N] (+)= f(x)[K] @ dequant(W)[N, K]^T for one row; the W words per row are a multiple of BLOCK_W.
        AHEAD: the next tile's words and scales are loaded before this tile is computed (two tiles in flight
        per program; same arithmetic). X2D: each field's x is loaded as a [BLOCK_N, BLOCK_W] tile in the
        words' layout (more L1 reads, the norm recomputed per row) instead of one vector that Triton shuffles
        into that layout through shared memory, with two barriers, for every field."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        BLOCK_K: tl.constexpr = BLOCK_W * PER
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        if AHEAD:  # the first tile goes out before the norm's pass over x
            words_next, s_next = _il_tile(p_ptr, s_ptr, rn, nmask, tl.arange(0, BLOCK_W), W, stride_p, stride_s, GW)
        factor = tl.zeros([], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor(x_ptr, K, eps, BLOCK_K, AHEAD)
        acc = tl.zeros([BLOCK_N, BLOCK_W], tl.float32)
        for w0 in range(0, W, BLOCK_W):
            wi = w0 + tl.arange(0, BLOCK_W)
            if AHEAD:
                words, s = words_next, s_next
                words_next, s_next = _il_tile(p_ptr, s_ptr, rn, nmask, wi + BLOCK_W, W, stride_p, stride_s, GW)
            else:
                words, s = _il_tile(p_ptr, s_ptr, rn, nmask, wi, W, stride_p, stride_s, GW)
            part = tl.zeros([BLOCK_N, BLOCK_W], tl.float32)
            if X2D:  # x loaded per row in the words' own 2-D layout: no shuffle through shared memory per field
                xs = tl.zeros([BLOCK_N, BLOCK_W], tl.float32)
            else:
                xs = tl.zeros([BLOCK_W], tl.float32)
            for j in tl.static_range(PER):
                rk = _columns(wi, j, GROUP, GW)
                if X2D:
                    rk = rk[None, :] + 0 * rn[:, None]
                a = tl.load(x_ptr + rk)
                a = _prologue(a, x_ptr, rk, rk, rk < K, factor, norm_ptr, K, PROLOGUE).to(tl.float32)
                part += _unit_field(words, j, BITS) * a  # a row vector broadcasts over the rows
                xs += a
            acc += s.to(tl.float32) * (part - 1.5 * xs)
        out = (tl.sum(acc, 1) * (ONE << BITS)).to(out_ptr.dtype.element_ty)
        _store_out(out_ptr, rn, nmask, out, RESIDUAL)

    @triton.jit
    def _il_tile(p_ptr, s_ptr, rn, nmask, wi, W, stride_p, stride_s, GW: tl.constexpr):
        """Words [BLOCK_N, BLOCK_W] at rows ``rn``, word columns ``wi``, and the scale of each word's group
        (nothing is read at columns past ``W``)."""
        mask = nmask[:, None] & (wi < W)[None, :]
        words = tl.load(p_ptr + rn[:, None] * stride_p + wi[None, :], mask=mask, other=0)
        s = tl.load(s_ptr + rn[:, None] * stride_s + (wi // GW)[None, :], mask=mask, other=0.0)
        return words, s

    @triton.jit
    def _weights(words, s, J: tl.constexpr, BITS: tl.constexpr, dtype: tl.constexpr):
        """Field ``J`` dequantized to ``dtype``: ``(q - offset) * scale`` exact in float32, rounded once (the
        torch reference's rounding, so bit-identical to ``format.dequantize``)."""
        q = _unit_field(words, J, BITS) * (ONE << BITS) - 1.5 * (ONE << BITS)
        return (q * s.to(tl.float32)).to(dtype)

    @triton.jit(do_not_specialize=["M"])
    def _il_dot_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, M, N, K, W, eps, stride_x, stride_p, stride_s,
                       stride_out, BITS: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr,
                       RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
                       PRECISION: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ dequant(W)[N, K]^T on tensor cores: one ``tl.dot`` per field of a
        k-step, each pairing a [BLOCK_N, BLOCK_W] weight tile with the x columns it holds (M <= BLOCK_M)."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        BLOCK_K: tl.constexpr = BLOCK_W * PER
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for w0 in range(0, W, BLOCK_W):
            wi = w0 + tl.arange(0, BLOCK_W)
            wmask = nmask[:, None] & (wi[None, :] < W)  # a row narrower than one block (small test models)
            words = tl.load(p_ptr + rn[:, None] * stride_p + wi[None, :], mask=wmask, other=0)
            s = tl.load(s_ptr + rn[:, None] * stride_s + (wi // GW)[None, :], mask=wmask, other=0.0)
            for j in tl.static_range(PER):
                rk = _columns(wi, j, GROUP, GW)
                offs = rm[:, None] * stride_x + rk[None, :]
                xmask = mmask[:, None] & (wi[None, :] < W)
                a = tl.load(x_ptr + offs, mask=xmask, other=0.0)
                a = _prologue(a, x_ptr, offs, rk[None, :], xmask, factor, norm_ptr, K, PROLOGUE)
                w = _weights(words, s, j, BITS, a.dtype)
                acc += tl.dot(a, tl.trans(w), input_precision=PRECISION)
        _store_out(out_ptr, rm[:, None] * stride_out + rn[None, :], mmask[:, None] & nmask[None, :],
                   acc.to(out_ptr.dtype.element_ty), RESIDUAL)

    @triton.jit
    def _il_dequant_kernel(p_ptr, s_ptr, out_ptr, N, stride_p, stride_s, stride_out, BITS: tl.constexpr,
                           GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        wi = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        words = tl.load(p_ptr + rn[:, None] * stride_p + wi[None, :], mask=nmask[:, None], other=0)
        s = tl.load(s_ptr + rn[:, None] * stride_s + (wi // GW)[None, :], mask=nmask[:, None], other=0.0)
        for j in tl.static_range(PER):
            w = _weights(words, s, j, BITS, out_ptr.dtype.element_ty)
            tl.store(out_ptr + rn[:, None] * stride_out + _columns(wi, j, GROUP, GW)[None, :], w,
                     mask=nmask[:, None])


def _check(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme, block_w: int,
           least: int = 1) -> tuple[int, int, int]:
    """(N, K, BLOCK_W): the configured BLOCK_W, halved until it divides the words per row (small models);
    ``least`` words per block at the least, a block wider than the row is masked (dot kernel only)."""
    n, words = packed.shape
    while block_w > least and words % block_w:
        block_w //= 2
    if words % block_w and words > block_w:
        raise ValueError(f"{words} words per row do not split into blocks of {block_w} words")
    require_row_major(packed, scale)
    return n, words * scheme.per_word, block_w


def gemv(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
         config: tuple[int, ...], norm_weight: torch.Tensor | None = None, eps: float = 0.0,
         swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for ONE row of interleaved weights; config (BLOCK_N, BLOCK_W, warps, stages[, MODE]),
    MODE 1: the next tile loaded ahead, 2: that and x read in the words' layout (``X2D``)."""
    block_n, block_w, warps, stages, *rest = config
    mode = rest[0] if rest else 0
    n, k, block_w = _check(packed, scale, scheme, block_w)
    out = residual if residual is not None else torch.empty(1, n, dtype=x.dtype, device=x.device)
    _il_gemv_kernel[(triton.cdiv(n, block_n),)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, n, k, packed.shape[1], eps,
        packed.stride(0), scale.stride(0), BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None, BLOCK_N=block_n,
        BLOCK_W=block_w, AHEAD=mode >= GEMV_AHEAD, X2D=mode >= GEMV_X2D, num_warps=warps, num_stages=stages,
    )
    return out


def dot(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
        config: tuple[int, int, int, int], norm_weight: torch.Tensor | None = None, eps: float = 0.0,
        swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for up to 16 rows of interleaved weights on tensor cores (same arguments as ``gemv``)."""
    block_n, block_w, warps, stages = config
    # tl.dot needs 16 columns per field: blocks of at least 16 words
    n, k, block_w = _check(packed, scale, scheme, block_w, least=triton_decode.MIN_DOT_ROWS)
    rows = x.shape[0]
    if rows > triton_decode.MIN_DOT_ROWS:
        raise ValueError(f"the interleaved dot kernel runs at most {triton_decode.MIN_DOT_ROWS} rows, got {rows}")
    out = residual if residual is not None else torch.empty(rows, n, dtype=x.dtype, device=x.device)
    _il_dot_kernel[(triton.cdiv(n, block_n),)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, rows, n, k, packed.shape[1], eps,
        x.stride(0), packed.stride(0), scale.stride(0), out.stride(0), BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None,
        BLOCK_M=triton_decode.MIN_DOT_ROWS, BLOCK_N=block_n, BLOCK_W=block_w,
        PRECISION=triton_decode._precision(x.dtype), num_warps=warps, num_stages=stages,
    )
    return out


def dequantize(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """The float weight [N, K] (column order) from interleaved words, bit-identical to ``format.dequantize``
    of the stored words."""
    block_n, block_w = DEQUANT_BLOCK
    n, k, block_w = _check(packed, scale, scheme, block_w)
    out = torch.empty(n, k, dtype=dtype or scale.dtype, device=packed.device)
    _il_dequant_kernel[(triton.cdiv(n, block_n), packed.shape[1] // block_w)](
        packed, scale, out, n, packed.stride(0), scale.stride(0), out.stride(0), BITS=scheme.bits,
        GROUP=scheme.group_size, BLOCK_N=block_n, BLOCK_W=block_w, num_warps=4,
    )
    return out
