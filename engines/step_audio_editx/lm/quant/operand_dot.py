"""Tensor-core kernel for 1-16 rows of interleaved int4 / int8 words, dequantized in the MMA operand layout.

Why: at 8-16 rows every quantized kernel before this one lost to bf16, though it reads 2-4x fewer bytes.
Their machine code shows the cost (``docs/performance.md``): the words were dequantized in the layout they
were loaded in and then moved through shared memory into the tensor-core operand layout (the per-field dot:
16 barriers and 72 shared stores per k-step in its sm_90 loop), or every element gathered its own word (8x the
bytes through shared memory, split-K's GATHER), and the loads were not pipelined. Here the weight tile is the
packed words read as BYTES, [bytes of a k-step, BLOCK_N] in memory order: a plain contiguous tile, so Triton
streams it into shared memory with ``cp.async`` (``stages`` deep) and loads it from there straight into the
operand layout, where the bytes become bf16 weights. The columns are matched the other way round: byte ``p`` of a
group holds known columns (below), so x is loaded as [rows, groups, fields, words] (contiguous, pipelined
too) and permuted in registers into the bytes' order.

* int8: byte ``4w + j`` of a group is field ``j`` of word ``w``, column ``j * GW + w``; the stored value is
  ``q + 128``.
* int4: byte ``4w + i`` holds fields ``2i`` (low nibble) and ``2i + 1`` (high), columns ``2i * GW + w`` and
  ``(2i + 1) * GW + w``; each nibble is ``q + 8``. Two dots per k-step on the same bytes, one per nibble.

The weight is ``q * scale`` rounded once to the scale's dtype, exactly ``format.dequantize``'s value, so
only the summation order differs from dequantize-then-matmul. With bf16 scales on the GPU the conversion is
a few packed instructions per pair of weights (``_INT4_*_ASM`` / ``_INT8_ASM``: a byte permute puts each field
under the exponent of 128.0, an AND keeps it, one bf16x2 FMA takes the offset off exactly and one multiplies
by the scale); elsewhere (fp16 / fp32 scales, Triton's CPU interpreter) the same values come from ordinary
integer ops and casts.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import triton_decode
from . import interleaved
from .format import SUPPORTED_BITS, WORD_BITS, QuantScheme, require_row_major
from .splitk import _workspace
from ...kernel_probe import run_probe
from ...triton_import import INTERPRETED, TRITON_IMPORT_ERROR

HAS_TRITON = triton_decode.HAS_TRITON
# (BLOCK_N, GROUPS_T, num_warps, stages, SPLIT): timed per role by the decode session at 1-16 rows. GROUPS_T
# whole groups per k-step; ``stages``: Triton's pipeline depth over the k-steps; SPLIT programs share a block of
# rows, each over its own slice of the groups (``splitk``'s partial sums, added in split order). Two rules, both
# checked on compiled code by ``tests/test_triton_compile.py``: the scale tile [GROUPS_T, BLOCK_N] has at least one
# element per thread (``GROUPS_T * BLOCK_N >= 32 * num_warps``; with fewer, Triton lays the weights out for the
# scales and moves every dequantized tile through shared memory), and shared memory (x, its norm or SwiGLU
# partner, the bytes, per stage) stays within the 99 KB per block of Ampere / Ada consumer cards. Every warp
# reads all 16 rows of x for its columns, so more columns per warp cost fewer instructions per weight (sm_90 PTX
# of the loop: int4 4.0 at 64 columns per warp, 4.5 at 32, 5.4 at 16; int8 4.6 / 5.1 / 6.0), but a warp holds
# its whole k-step of weights in registers: at 128 columns per warp ptxas spills (int8: 300+ bytes), so the
# widest here is 64 (int8 spills 4-16 bytes there with a prologue). Not timed on a GPU yet.
CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (64, 2, 4, 4, 1), (128, 1, 4, 4, 1), (128, 1, 4, 4, 2), (128, 1, 2, 4, 2), (64, 1, 2, 4, 2), (64, 1, 2, 4, 4),
    (32, 2, 2, 4, 2), (64, 2, 4, 3, 4))
MAX_ROWS = triton_decode.MIN_DOT_ROWS  # rows per call, and the M block (tl.dot's smallest)
BYTE_BITS = 8
PROBE_COLUMNS = 1024

# bf16 weights from 4 stored bytes (``$2``) and their 4 bf16 scales (``$3``, ``$4``), as 2 x bf16x2 (``$0``, ``$1``).
# ``prmt`` with 0x43 puts byte k under 0x43 (bf16 0x43bb); AND-ing a 4-bit field into the mantissa gives 128 + u.
_NIBBLES = """
prmt.b32 t0, {src}, 0x43, 0x4140;
prmt.b32 t1, {src}, 0x43, 0x4342;
and.b32 t0, t0, 0xFF0FFF0F;
and.b32 t1, t1, 0xFF0FFF0F;
mov.b32 c, 0x3F803F80;
mov.b32 d, 0xC308C308;
fma.rn.bf16x2 t0, t0, c, d;
fma.rn.bf16x2 t1, t1, c, d;"""  # (128 + u) * 1 - 136 = u - 8 = q, exact
# int8: the stored q + 128 XOR 0x80 is q as a signed byte; 128 + (low 7 bits) minus 128 (or 256 where the sign
# bit is set) is q, exact.
_BYTES = """
xor.b32 v, $2, 0x80808080;
prmt.b32 t0, v, 0x43, 0x4140;
prmt.b32 t1, v, 0x43, 0x4342;
and.b32 l0, t0, 0xFF7FFF7F;
and.b32 l1, t1, 0xFF7FFF7F;
and.b32 t0, t0, 0xFF80FF80;
and.b32 t1, t1, 0xFF80FF80;
mov.b32 c, 0xBF80BF80;
fma.rn.bf16x2 t0, t0, c, l0;
fma.rn.bf16x2 t1, t1, c, l1;"""
_TIMES_SCALE = """
mov.b32 d, 0x80008000;
fma.rn.bf16x2 $0, t0, $3, d;
fma.rn.bf16x2 $1, t1, $4, d;"""  # q * scale + (-0): the product rounded once, as torch's bf16 multiply rounds it
_INT4_LOW_ASM = "{\n.reg .b32 t0, t1, c, d;" + _NIBBLES.format(src="$2") + _TIMES_SCALE + "\n}"
_INT4_HIGH_ASM = "{\n.reg .b32 t0, t1, c, d, h;\nshr.b32 h, $2, 4;" + _NIBBLES.format(src="h") + _TIMES_SCALE + "\n}"
_INT8_ASM = "{\n.reg .b32 v, t0, t1, l0, l1, c, d;" + _BYTES + _TIMES_SCALE + "\n}"

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ..triton_decode import _prologue, _rows_and_factor
    from .splitk import _store_split

    K_INT4_LOW_ASM, K_INT4_HIGH_ASM, K_INT8_ASM = (tl.constexpr(_INT4_LOW_ASM), tl.constexpr(_INT4_HIGH_ASM),
                                                   tl.constexpr(_INT8_ASM))

    @triton.jit
    def _weights(b, s_k, BITS: tl.constexpr, HIGH: tl.constexpr, ASM: tl.constexpr):
        """The weights ``q * scale`` (rounded once, in the scale's dtype) of the stored bytes ``b`` [TB, BLOCK_N]
        (int4: the nibble HIGH or low of each byte), with ``s_k`` each byte's scale."""
        if ASM:
            if BITS == 8:
                return tl.inline_asm_elementwise(K_INT8_ASM, "=r,=r,r,r,r", [b, s_k], dtype=tl.bfloat16,
                                                 is_pure=True, pack=4)
            if HIGH:
                return tl.inline_asm_elementwise(K_INT4_HIGH_ASM, "=r,=r,r,r,r", [b, s_k], dtype=tl.bfloat16,
                                                 is_pure=True, pack=4)
            return tl.inline_asm_elementwise(K_INT4_LOW_ASM, "=r,=r,r,r,r", [b, s_k], dtype=tl.bfloat16,
                                             is_pure=True, pack=4)
        if BITS == 8:
            q = (b.to(tl.int32) & 255) - 128  # the stored value is q + 128
        elif HIGH:
            q = ((b.to(tl.int32) >> 4) & 15) - 8  # each nibble is q + 8
        else:
            q = (b.to(tl.int32) & 15) - 8
        return q.to(s_k.dtype) * s_k

    @triton.jit(do_not_specialize=["M"])
    def _operand_dot_kernel(x_ptr, b_ptr, s_ptr, out_ptr, norm_ptr, part_ptr, counter_ptr, M, N, K, SPAN, eps,
                            stride_x, stride_b, stride_s, stride_out, BITS: tl.constexpr, GROUP: tl.constexpr,
                            PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, GROUPS_T: tl.constexpr, STAGES: tl.constexpr,
                            SPLIT: tl.constexpr, PRECISION: tl.constexpr, ASM: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ dequant(W)[N, K]^T; program ``(i, k)`` runs groups ``k * SPAN ..`` of its
        rows. ``b_ptr``: the interleaved words as bytes [N, K * BITS / 8]."""
        PER: tl.constexpr = 32 // BITS  # fields per word
        GW: tl.constexpr = GROUP // PER  # words per group
        GB: tl.constexpr = GROUP * BITS // 8  # bytes per group
        TB: tl.constexpr = GB * GROUPS_T  # bytes per row and k-step
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, GROUPS_T * GROUP)
        gt = tl.arange(0, GROUPS_T)
        field = tl.arange(0, PER)
        word = tl.arange(0, GW)
        pb = tl.arange(0, TB)
        g_first = pid_k * SPAN
        g_end = g_first + SPAN
        s_next = tl.load(s_ptr + rn[None, :] * stride_s + (g_first + gt)[:, None], mask=nmask[None, :], other=0.0)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for g0 in tl.range(g_first, g_end, GROUPS_T, num_stages=STAGES):
            s = s_next  # [GROUPS_T, BLOCK_N], loaded one k-step ahead (a scale row is too narrow for cp.async)
            ahead = g0 + GROUPS_T + gt
            s_next = tl.load(s_ptr + rn[None, :] * stride_s + ahead[:, None],
                             mask=nmask[None, :] & (ahead < g_end)[:, None], other=0.0)
            # x as [rows, groups, fields, words]: contiguous columns g * GROUP + field * GW + word
            cols = (g0 + gt)[None, :, None, None] * GROUP + field[None, None, :, None] * GW + word[None, None, None, :]
            offs = rm[:, None, None, None] * stride_x + cols
            xmask = mmask[:, None, None, None] & (cols < K)
            x4 = tl.load(x_ptr + offs, mask=xmask, other=0.0)
            x4 = _prologue(x4, x_ptr, offs, cols, xmask, factor[:, :, None, None], norm_ptr, K, PROLOGUE)
            b = tl.load(b_ptr + rn[None, :] * stride_b + (g0 * GB + pb)[:, None], mask=nmask[None, :], other=0)
            s_k = tl.reshape(tl.broadcast_to(s[:, None, :], (GROUPS_T, GB, BLOCK_N)), (TB, BLOCK_N))
            if BITS == 8:  # byte 4w + j: field j of word w
                a = tl.reshape(tl.permute(x4, (0, 1, 3, 2)), (BLOCK_M, TB))
                acc = tl.dot(a, _weights(b, s_k, BITS, False, ASM).to(a.dtype), acc, input_precision=PRECISION)
            else:  # byte 4w + i: fields 2i (low nibble) and 2i + 1 (high) of word w
                x5 = tl.reshape(x4, (BLOCK_M, GROUPS_T, PER // 2, 2, GW))
                lo, hi = tl.split(tl.permute(x5, (0, 1, 4, 2, 3)))
                a_lo = tl.reshape(lo, (BLOCK_M, TB))
                a_hi = tl.reshape(hi, (BLOCK_M, TB))
                acc = tl.dot(a_lo, _weights(b, s_k, BITS, False, ASM).to(a_lo.dtype), acc, input_precision=PRECISION)
                acc = tl.dot(a_hi, _weights(b, s_k, BITS, True, ASM).to(a_hi.dtype), acc, input_precision=PRECISION)
        _store_split(acc, out_ptr, part_ptr, counter_ptr, rm, rn, mmask, nmask, pid_n, pid_k, N, stride_out,
                     BLOCK_M, BLOCK_N, SPLIT, RESIDUAL)


def supports(scheme: QuantScheme) -> bool:
    """True for int4 / int8 with a power-of-two number of words per group (the x tile's shape)."""
    gw = scheme.words_per_group
    return scheme.bits in SUPPORTED_BITS and gw >= 1 and gw & (gw - 1) == 0


def fits(words: int, scheme: QuantScheme, config: tuple[int, ...]) -> bool:
    """True when rows of ``words`` words split into ``SPLIT`` slices of whole ``GROUPS_T``-group k-steps, each
    at least tl.dot's 16 columns deep in bytes."""
    _, groups_t, _, _, split = config
    gw = scheme.words_per_group
    groups = words // gw
    step_bytes = groups_t * scheme.group_size * scheme.bits // BYTE_BITS
    return (supports(scheme) and words % gw == 0 and groups % (groups_t * split) == 0
            and step_bytes >= triton_decode.MIN_DOT_ROWS)


def operand_dot(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
                config: tuple[int, ...], norm_weight: torch.Tensor | None = None, eps: float = 0.0,
                swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for 1-16 rows of interleaved words (``interleaved.dot``'s arguments); config (BLOCK_N,
    GROUPS_T, warps, stages, SPLIT)."""
    block_n, groups_t, warps, stages, split = config
    n, words = packed.shape
    rows = x.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"the operand-layout kernel runs at most {MAX_ROWS} rows, got {rows}")
    if not fits(words, scheme, config):
        raise ValueError(f"{words} words per row of {scheme.name} (groups of {scheme.group_size}) do not split "
                         f"into {split} x k-steps of {groups_t} groups")
    require_row_major(packed, scale)
    groups = words // scheme.words_per_group
    blocks = triton.cdiv(n, block_n)
    row_bytes = packed.stride(0) * (WORD_BITS // BYTE_BITS)
    part, counter = _workspace(x.device, split * MAX_ROWS * n if split > 1 else 1, blocks)
    out = residual if residual is not None else torch.empty(rows, n, dtype=x.dtype, device=x.device)
    _operand_dot_kernel[(blocks, split)](
        x, packed.view(torch.int8), scale, out, norm_weight if norm_weight is not None else scale, part, counter,
        rows, n, groups * scheme.group_size, groups // split, eps, x.stride(0), row_bytes, scale.stride(0),
        out.stride(0), BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None,
        BLOCK_M=MAX_ROWS, BLOCK_N=block_n, GROUPS_T=groups_t, STAGES=stages, SPLIT=split,
        PRECISION=triton_decode._precision(x.dtype), ASM=scale.dtype == torch.bfloat16 and not INTERPRETED,
        num_warps=warps,
    )
    return out


@lru_cache(maxsize=None)
def kernel_problem(device: str) -> str | None:
    """Why this kernel cannot be used on ``device`` (None when a probe of int4 and int8 at 1 and 16 rows agrees
    with dequantize-then-matmul): the decode session then times the other kernels only."""
    if not HAS_TRITON:
        return f"Triton is unavailable ({TRITON_IMPORT_ERROR})"

    def probe() -> str | None:
        for bits in (4, 8):
            scheme, laid, scale, reference, gen = interleaved.probe_matrix(device, bits, PROBE_COLUMNS)
            x = torch.randn(MAX_ROWS, PROBE_COLUMNS, device=device, generator=gen).to(torch.bfloat16)
            want = x.float() @ reference.float().T
            for rows in (1, MAX_ROWS):
                if interleaved.probe_disagrees(operand_dot(x[:rows], laid, scale, scheme, CONFIGS[0]), want[:rows]):
                    return f"the int{bits} operand-layout kernel disagrees with dequantize-then-matmul"
        return None

    return run_probe(device, "Operand-layout int4 / int8 kernels", "the other kernels are timed", probe)
