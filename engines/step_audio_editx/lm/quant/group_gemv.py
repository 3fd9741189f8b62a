"""One-row GEMV on interleaved int4 / int8 words with a group-major tile: about half the instructions per weight.

Why: a batch-1 decode step streams every weight once, and ``interleaved.gemv`` spends ~7 machine
instructions per int4 weight (the sm_90 SASS of its gate_up configuration): a scale load with its own
address arithmetic for every word, the AND and the OR of each field as two instructions, a shift per
field, and the [rows, words] partial sums moved through shared memory every tile to the scales' layout.
This kernel needs ~3.5 (4.1 with the RMSNorm inside):

* the tile is [groups, rows, words of a group] (``GROUPS_T`` whole groups of ``BLOCK_N`` rows): threads run
  along the groups and the words of a group, warps along the rows, so each thread holds ``BLOCK_N / warps``
  rows of ONE group (four words each) and loads one scale per row and group, and the x values of a field
  are a small [groups, words] tile that Triton loads in the words' own layout (no shuffle);
* fields are not shifted one by one to the top of a float's mantissa: a few shifted copies of the word hold
  the fields at bits ``POS`` (12 and 16 for int4, 8 for int8), where ``(copy & mask) | 1.0f`` is
  ``f = 1 + q * 2^(POS-23)`` exactly, in ONE instruction (the 1.0 bit pattern is a kernel argument, so the
  compiler keeps it in a register and fuses the AND and the OR). ``x`` is pre-scaled by ``2^(23-POS)``
  (exact), so ``x' f = x' + q x`` and ``q - offset`` comes out by subtracting ``x' + offset * x`` once per
  word. The largest offset kept against a field's value is 2^7 (int4 at bit 12): ~16 bits of float32 remain,
  far below the bf16 output's rounding (the same tolerance as every quantized kernel here).

Weights and arithmetic are dequantize-then-matmul's: ``(q - offset) * scale`` per weight in float32, only
the summation order differs (``tests/test_quant_group_gemv_interpreted.py`` and the GPU tests).

Measured on the H200 (``bench/bench_quant_kernels.py``, 2026-12-04): int4 gate_up 13.7 us against 18.1 (1.9
TB/s); int8 per layer 54 us against 77 in the stored layout, so int8 is now laid out interleaved too.

Tiles in flight: Triton software-pipelines a loop without a dot only when the loop itself carries stages
(``tl.range(num_stages=...)``); the kernel-wide ``num_stages`` the first configurations set changed no
instruction. With the loop pipelined (cp.async into shared memory, ``stages`` tiles in flight) int8 per layer
fell from 58 to 44 us with the prologues fused (down 19.7 -> 13.2, gate_up 22.5 -> 17.5); int4 gate_up stays
fastest unpipelined (13.5 us). Weights stored tile by tile, or read by TMA copies, gained nothing.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import triton_decode
from . import interleaved
from .format import QuantScheme, require_row_major
from ...kernel_probe import run_probe
from ...triton_import import TRITON_IMPORT_ERROR

HAS_TRITON = triton_decode.HAS_TRITON
# (BLOCK_N, GROUPS_T, num_warps, stages[, AHEAD]): timed per role by the decode session at batch 1. ``stages`` > 1:
# Triton's software pipeline over the tiles (with AHEAD 0). On the H200 (2026-12-04, 16 layers cycled, with the
# norm / SwiGLU / residual fused) int4 gate_up took [64, 8, 8, 1, 0]; int8 took the pipelined ones: [16, 8, 4, 3]
# for q/k/v and o, [64, 2, 4, 3] for gate_up, [16, 8, 2, 3] for down. x's [GROUPS_T, words per group] tile must
# stay below the program's threads, or Triton shuffles it through shared memory instead of loading it in the
# words' layout.
CONFIGS: tuple[tuple[int, ...], ...] = ((64, 8, 8, 1, 0), (32, 8, 8, 1, 0), (16, 8, 8, 1, 0), (64, 8, 8, 1, 1),
                                        (16, 8, 8, 1, 1), (16, 8, 8, 1, 2), (16, 8, 2, 3, 0), (16, 8, 4, 3, 0),
                                        (32, 8, 4, 3, 0), (64, 2, 4, 3, 0))
FIELD_POS = {4: 12, 8: 8}  # bits: the mantissa bit where a copy's first field sits
FIELDS_PER_COPY = {4: 2, 8: 1}  # int4 also uses the nibble at POS + 4 (bit 16); an int8 field fills bits 8..15
PROBE_COLUMNS = 1024  # the probe's row: 8 whole groups of 128, the tiles a full-size model runs

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ..triton_decode import _prologue, _rms_factor, _store_out
    from .interleaved import MANTISSA_BITS as MANTISSA
    from .interleaved import ONE

    @triton.jit
    def _group_tile(p_ptr, s_ptr, rn, nmask, g, gi, wl, G, stride_p, stride_s, GW: tl.constexpr,
                    EVEN: tl.constexpr):
        """Words [GROUPS_T, BLOCK_N, GW] of groups ``g + gi`` and their scales [GROUPS_T, BLOCK_N]; zeros past
        the matrix (unless ``EVEN``: every tile is whole)."""
        groups = g + gi
        wp = p_ptr + rn[None, :, None] * stride_p + groups[:, None, None] * GW + wl[None, None, :]
        sp = s_ptr + rn[None, :] * stride_s + groups[:, None]
        if EVEN:
            return tl.load(wp), tl.load(sp)
        mask = nmask[None, :] & (groups < G)[:, None]
        return tl.load(wp, mask=mask[:, :, None], other=0), tl.load(sp, mask=mask, other=0.0)

    @triton.jit
    def _ahead(g, G, EVEN: tl.constexpr):
        """First group of a tile loaded ahead: past the row it wraps to the start when every tile is whole (the
        load needs no mask and reads nothing out of bounds); otherwise the masked tile reads nothing."""
        if EVEN:
            return g % G
        return g

    @triton.jit
    def _group_gemv_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, N, K, G, eps, stride_p, stride_s, one_bits,
                           BITS: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr,
                           RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS_T: tl.constexpr,
                           AHEAD: tl.constexpr, EVEN: tl.constexpr, POS: tl.constexpr, PER_COPY: tl.constexpr,
                           PIPELINE: tl.constexpr):
        """out[N] (+)= f(x)[K] @ dequant(W)[N, K]^T for one row; ``G`` groups per row. AHEAD (0-2): the words
        and scales of that many next tiles are loaded before this one is computed. PIPELINE (with AHEAD 0):
        Triton's software pipeline keeps that many tiles in flight through shared memory (cp.async); a loop
        without a dot is pipelined only when the loop itself asks for stages, as here."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        FIELD: tl.constexpr = (ONE << BITS) - 1
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        gi = tl.arange(0, GROUPS_T)
        wl = tl.arange(0, GW)
        if AHEAD >= 1:
            words_1, s_1 = _group_tile(p_ptr, s_ptr, rn, nmask, 0, gi, wl, G, stride_p, stride_s, GW, EVEN)
        if AHEAD >= 2:
            words_2, s_2 = _group_tile(p_ptr, s_ptr, rn, nmask, _ahead(GROUPS_T, G, EVEN), gi, wl, G, stride_p,
                                       stride_s, GW, EVEN)
        factor = tl.zeros([], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor(x_ptr, K, eps, GROUPS_T * GROUP, AHEAD)
        acc = tl.zeros([GROUPS_T, BLOCK_N], tl.float32)
        for g0 in tl.range(0, G, GROUPS_T, num_stages=PIPELINE):
            if AHEAD == 0:
                words, s = _group_tile(p_ptr, s_ptr, rn, nmask, g0, gi, wl, G, stride_p, stride_s, GW, EVEN)
            elif AHEAD == 1:
                words, s = words_1, s_1
                words_1, s_1 = _group_tile(p_ptr, s_ptr, rn, nmask, _ahead(g0 + GROUPS_T, G, EVEN), gi, wl, G,
                                           stride_p, stride_s, GW, EVEN)
            else:
                words, s, words_1, s_1 = words_1, s_1, words_2, s_2
                words_2, s_2 = _group_tile(p_ptr, s_ptr, rn, nmask, _ahead(g0 + 2 * GROUPS_T, G, EVEN), gi, wl, G,
                                           stride_p, stride_s, GW, EVEN)
            part = tl.zeros([GROUPS_T, BLOCK_N, GW], tl.float32)
            offset = tl.zeros([GROUPS_T, GW], tl.float32)
            for c in tl.static_range(PER // PER_COPY):
                if POS >= BITS * PER_COPY * c:  # copy c holds fields PER_COPY * c .. at bits POS ..
                    copy = words << (POS - BITS * PER_COPY * c)
                else:
                    copy = words >> (BITS * PER_COPY * c - POS)
                for h in tl.static_range(PER_COPY):
                    rk = (g0 + gi)[:, None] * GROUP + (PER_COPY * c + h) * GW + wl[None, :]
                    if EVEN:
                        a = tl.load(x_ptr + rk)
                    else:
                        a = tl.load(x_ptr + rk, mask=rk < K, other=0.0)
                    a = _prologue(a, x_ptr, rk, rk, rk < K, factor, norm_ptr, K, PROLOGUE).to(tl.float32)
                    a = a * (ONE << (MANTISSA - POS - BITS * h))  # exact: f * a = a + q * a * 2^(POS'-23)
                    f = ((copy & (FIELD << (POS + BITS * h))) | one_bits).to(tl.float32, bitcast=True)
                    part += f * a[:, None, :]
                    # what f * a' holds beyond (q - offset) * a: a' + offset * a
                    offset += a * (1.0 + (ONE << (BITS - 1)) / (ONE << (MANTISSA - POS - BITS * h)))
            acc += s.to(tl.float32) * tl.sum(part - offset[:, None, :], 2)  # per row and group: few registers
        out = tl.sum(acc, 0).to(out_ptr.dtype.element_ty)
        _store_out(out_ptr, rn, nmask, out, RESIDUAL)


@lru_cache(maxsize=None)
def kernel_problem(device: str) -> str | None:
    """Why this GEMV cannot be used on ``device`` (None when a probe of int4 and int8 agrees with
    dequantize-then-matmul): the decode session then times the other one-row kernels only."""
    if not HAS_TRITON:
        return f"Triton is unavailable ({TRITON_IMPORT_ERROR})"

    def probe() -> str | None:
        for bits in (4, 8):
            scheme, laid, scale, reference, gen = interleaved.probe_matrix(device, bits, PROBE_COLUMNS)
            x = torch.randn(1, PROBE_COLUMNS, device=device, generator=gen).to(torch.bfloat16)
            if interleaved.probe_disagrees(gemv(x, laid, scale, scheme, CONFIGS[0]), x.float() @ reference.float().T):
                return f"the int{bits} group-major GEMV disagrees with dequantize-then-matmul"
        return None

    return run_probe(device, "Group-major int4 / int8 GEMV kernels", "the other one-row kernels are timed", probe)


def supports(scheme: QuantScheme) -> bool:
    """True for the schemes this kernel unpacks (int4 / int8 with a power-of-two number of words per group)."""
    gw = scheme.words_per_group
    return scheme.bits in FIELD_POS and gw >= 1 and gw & (gw - 1) == 0


def gemv(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
         config: tuple[int, ...], norm_weight: torch.Tensor | None = None, eps: float = 0.0,
         swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for ONE row of interleaved words (``interleaved.gemv``'s arguments); config (BLOCK_N,
    GROUPS_T, warps, stages[, AHEAD tiles, default 1]): ``stages`` > 1 is the depth of Triton's software pipeline
    over the tiles (only with AHEAD 0: the two are alternative ways to keep tiles in flight)."""
    block_n, groups_t, warps, stages, *rest = config
    ahead = rest[0] if rest else 1
    if stages > 1 and ahead:
        raise ValueError(f"group GEMV config {config}: a pipelined loop (stages {stages}) loads no tiles ahead")
    if not supports(scheme):
        raise ValueError(f"the group-major GEMV does not unpack {scheme.name} with groups of {scheme.group_size}")
    require_row_major(packed, scale)
    n, words = packed.shape
    gw = scheme.words_per_group
    if words % gw:
        raise ValueError(f"{words} words per row are not whole groups of {gw} words")
    groups = words // gw
    out = residual if residual is not None else torch.empty(1, n, dtype=x.dtype, device=x.device)
    _group_gemv_kernel[(triton.cdiv(n, block_n),)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, n, groups * scheme.group_size,
        groups, eps, packed.stride(0), scale.stride(0),
        interleaved.FLOAT32_ONE_BITS,  # OR-ed into a field's copy; a run-time value, so it sits in a register
        BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None, BLOCK_N=block_n,
        GROUPS_T=groups_t, AHEAD=ahead, EVEN=(n % block_n == 0 and groups % groups_t == 0),
        POS=FIELD_POS[scheme.bits], PER_COPY=FIELDS_PER_COPY[scheme.bits], PIPELINE=stages, num_warps=warps,
    )
    return out
