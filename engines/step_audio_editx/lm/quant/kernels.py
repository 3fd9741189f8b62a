"""Triton kernels that read packed int4 / int8 weights (``format``) and dequantize them in registers.

Why: a decode step at batch <= 16 is bound by reading the weights; int4 reads a quarter of bf16's bytes
(plus 1/64 byte per weight of scales). Each kernel unpacks a [BLOCK_N, BLOCK_K] tile from int32 words,
forms ``q * scale`` in float32 (exact: the torch reference rounds that product once more, to the scale's
bf16, a difference of at most 2^-9 of a weight, far below one quantization step) and accumulates in
float32; activations and outputs keep their own dtype. Prologues / epilogue are those of the bf16 decode
kernels of ``triton_decode`` (RMSNorm or SwiGLU on the input, residual add in place):

* ``qgemv``: one row on CUDA cores (the batch-1 decode step);
* ``qdot``: 1-16 rows on tensor cores (``tl.dot`` on the dequantized tile);
* ``dequantize``: the whole matrix to the model dtype (prefill and longer inputs then use cuBLAS); its one
  rounding of the exact product makes it bit-identical to the torch reference.

The accumulation order differs from cuBLAS, so results agree with dequantize-then-matmul to float32
rounding, not bit for bit (``tests/test_quant_kernels.py``). Works on any GPU Triton supports
(compute capability 7.0+ for ``tl.dot`` in fp16; bf16 needs 8.0+, which the dtype choice already ensures).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import triton_decode
from .format import QuantScheme, require_row_major
from .format import dequantize as format_dequantize
from .format import quantize as format_quantize
from ...kernel_probe import run_probe
from ...triton_import import TRITON_IMPORT_ERROR


MAX_KERNEL_ROWS = triton_decode.MIN_DOT_ROWS  # rows a quantized matmul runs in one fused kernel
DEFAULT_GEMV = (8, 512, 4, 1)  # (BLOCK_N, BLOCK_K, num_warps, num_stages) used outside the decode session
DEFAULT_DOT = (32, 256, 4, 4)
DEQUANT_BLOCK = (32, 256)  # rows x columns per dequantize program
MIN_BLOCK_K = 16  # tl.dot's smallest inner size
PROBE_ROWS, PROBE_COLUMNS = 32, 256  # the one-off probe of ``kernel_problem``

HAS_TRITON = triton_decode.HAS_TRITON
if HAS_TRITON:
    import triton
    import triton.language as tl

    from ..triton_decode import _prologue, _rms_factor, _rows_and_factor, _store_out

    MAGIC_BITS = tl.constexpr(0x4B000000)  # float32 2^23: a field OR-ed into its mantissa reads 2^23 + q
    MAGIC = tl.constexpr(8388608.0)

    @triton.jit
    def _centered(fields, BITS: tl.constexpr):
        """Unsigned fields -> ``q - 2^(BITS-1)`` in float32, exact, without a conversion instruction (those run
        at a quarter of the FMA rate): each field is OR-ed into the mantissa of 2^23 and 2^23 + offset taken off."""
        return (fields | MAGIC_BITS).to(tl.float32, bitcast=True) - (MAGIC + (1 << (BITS - 1)))


def available(tensor: torch.Tensor) -> bool:
    """True when the Triton kernels run on ``tensor``'s device (probed once per device: a GPU Triton cannot
    compile for, e.g. an old one, gets the torch reference path instead of an error)."""
    return HAS_TRITON and tensor.is_cuda and kernel_problem(str(tensor.device)) is None


@lru_cache(maxsize=None)
def kernel_problem(device: str) -> str | None:
    """Why the quantized kernels cannot run on ``device`` (None when a probe matches the torch reference)."""
    if not HAS_TRITON:
        return f"Triton is unavailable ({TRITON_IMPORT_ERROR})"

    def probe() -> str | None:
        scheme = QuantScheme(4)
        weight = torch.linspace(-1, 1, PROBE_ROWS * PROBE_COLUMNS, device=device).view(PROBE_ROWS, PROBE_COLUMNS)
        packed, scale = format_quantize(weight, scheme)
        if not torch.equal(dequantize(packed, scale, scheme), format_dequantize(packed, scale, scheme)):
            return "the dequantize kernel disagrees with the torch reference"
        return None

    return run_probe(device, "Quantized Triton kernels", "dequantize-then-matmul is used instead (exact, slower)",
                     probe)


if HAS_TRITON:

    @triton.jit
    def _dequant_tile(p_ptr, s_ptr, rn, nmask, k0, stride_p, stride_s, BITS: tl.constexpr,
                      GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The dequantized weight tile [BLOCK_N, BLOCK_K] (float32, ``q * scale`` exact) at rows ``rn``, columns
        ``k0 ..``; int -> float by ``_centered``, one scale load per group."""
        PER_WORD: tl.constexpr = 32 // BITS
        rw = k0 // PER_WORD + tl.arange(0, BLOCK_K // PER_WORD)
        words = tl.load(p_ptr + rn[:, None] * stride_p + rw[None, :], mask=nmask[:, None], other=0)
        shifts = tl.arange(0, PER_WORD) * BITS
        fields = (words[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1)
        q = tl.reshape(_centered(fields, BITS), (BLOCK_N, BLOCK_K))
        if BLOCK_K >= GROUP:
            GROUPS: tl.constexpr = BLOCK_K // GROUP
            rg = k0 // GROUP + tl.arange(0, GROUPS)
            s = tl.load(s_ptr + rn[:, None] * stride_s + rg[None, :], mask=nmask[:, None], other=0.0)
            w = tl.reshape(tl.reshape(q, (BLOCK_N, GROUPS, GROUP)) * s.to(tl.float32)[:, :, None],
                           (BLOCK_N, BLOCK_K))
        else:
            s = tl.load(s_ptr + rn * stride_s + k0 // GROUP, mask=nmask, other=0.0)
            w = q * s.to(tl.float32)[:, None]
        return w

    @triton.jit
    def _qgemv_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, N, K, eps, stride_p, stride_s,
                      BITS: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[N] (+)= f(x)[K] @ dequant(W)[N, K]^T for one row; K is a multiple of BLOCK_K."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        factor = tl.zeros([], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor(x_ptr, K, eps, BLOCK_K)
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(x_ptr + rk)
            a = _prologue(a, x_ptr, rk, rk, rk < K, factor, norm_ptr, K, PROLOGUE)
            w = _dequant_tile(p_ptr, s_ptr, rn, nmask, k0, stride_p, stride_s, BITS, GROUP, BLOCK_N, BLOCK_K)
            acc += w * a.to(tl.float32)[None, :]
        out = tl.sum(acc, 1).to(out_ptr.dtype.element_ty)
        _store_out(out_ptr, rn, nmask, out, RESIDUAL)

    @triton.jit(do_not_specialize=["M"])
    def _qdot_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, M, N, K, eps, stride_x, stride_p, stride_s,
                     stride_out, BITS: tl.constexpr, GROUP: tl.constexpr, PROLOGUE: tl.constexpr,
                     RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     PRECISION: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ dequant(W)[N, K]^T on tensor cores (M <= BLOCK_M)."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            offs = rm[:, None] * stride_x + rk[None, :]
            xmask = mmask[:, None] & (rk[None, :] < K)
            a = tl.load(x_ptr + offs, mask=xmask, other=0.0)
            a = _prologue(a, x_ptr, offs, rk[None, :], xmask, factor, norm_ptr, K, PROLOGUE)
            w = _dequant_tile(p_ptr, s_ptr, rn, nmask, k0, stride_p, stride_s, BITS, GROUP, BLOCK_N, BLOCK_K)
            acc += tl.dot(a, tl.trans(w.to(a.dtype)), input_precision=PRECISION)
        _store_out(out_ptr, rm[:, None] * stride_out + rn[None, :], mmask[:, None] & nmask[None, :],
                   acc.to(out_ptr.dtype.element_ty), RESIDUAL)

    @triton.jit
    def _dequant_kernel(p_ptr, s_ptr, out_ptr, N, stride_p, stride_s, stride_out, BITS: tl.constexpr,
                        GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        k0 = tl.program_id(1) * BLOCK_K
        w = _dequant_tile(p_ptr, s_ptr, rn, nmask, k0, stride_p, stride_s, BITS, GROUP, BLOCK_N, BLOCK_K)
        rk = k0 + tl.arange(0, BLOCK_K)
        tl.store(out_ptr + rn[:, None] * stride_out + rk[None, :], w.to(out_ptr.dtype.element_ty),
                 mask=nmask[:, None])


def _check(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme, block_k: int) -> tuple[int, int, int]:
    """(N, K, BLOCK_K): the configured BLOCK_K, halved until it divides K (small test models)."""
    n = packed.shape[0]
    k = packed.shape[1] * scheme.per_word
    while block_k > MIN_BLOCK_K and k % block_k:
        block_k //= 2
    if k % block_k or block_k % scheme.per_word:
        raise ValueError(f"{k} input columns do not split into blocks of {block_k} for {scheme.name}")
    require_row_major(packed, scale)
    return n, k, block_k


def qgemv(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
          config: tuple[int, int, int, int] = DEFAULT_GEMV, norm_weight: torch.Tensor | None = None,
          eps: float = 0.0, swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for ONE row (x [1, K], or [1, 2K] for SwiGLU); with ``residual`` added into it in place."""
    block_n, block_k, warps, stages = config
    n, k, block_k = _check(packed, scale, scheme, block_k)
    out = residual if residual is not None else torch.empty(1, n, dtype=x.dtype, device=x.device)
    _qgemv_kernel[(triton.cdiv(n, block_n),)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, n, k, eps,
        packed.stride(0), scale.stride(0), BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )
    return out


def qdot(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
         config: tuple[int, int, int, int] = DEFAULT_DOT, norm_weight: torch.Tensor | None = None,
         eps: float = 0.0, swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for up to 16 rows on tensor cores (same arguments as ``qgemv``)."""
    block_n, block_k, warps, stages = config
    n, k, block_k = _check(packed, scale, scheme, block_k)
    rows = x.shape[0]
    if rows > MAX_KERNEL_ROWS:
        raise ValueError(f"qdot runs at most {MAX_KERNEL_ROWS} rows, got {rows}")
    out = residual if residual is not None else torch.empty(rows, n, dtype=x.dtype, device=x.device)
    _qdot_kernel[(triton.cdiv(n, block_n),)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, rows, n, k, eps,
        x.stride(0), packed.stride(0), scale.stride(0), out.stride(0), BITS=scheme.bits, GROUP=scheme.group_size,
        PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu), RESIDUAL=residual is not None,
        BLOCK_M=MAX_KERNEL_ROWS, BLOCK_N=block_n, BLOCK_K=block_k,
        PRECISION=triton_decode._precision(x.dtype), num_warps=warps, num_stages=stages,
    )
    return out


def quant_linear(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """``x @ W^T`` for a few contiguous rows with the default kernel configuration."""
    x = x.contiguous()
    if x.shape[0] == 1:
        return qgemv(x, packed, scale, scheme)
    return qdot(x, packed, scale, scheme)


def dequantize(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """The float weight [N, K] on the GPU in one launch (same values as ``format.dequantize``)."""
    block_n, block_k = DEQUANT_BLOCK
    n, k, block_k = _check(packed, scale, scheme, block_k)
    out = torch.empty(n, k, dtype=dtype or scale.dtype, device=packed.device)
    _dequant_kernel[(triton.cdiv(n, block_n), k // block_k)](
        packed, scale, out, n, packed.stride(0), scale.stride(0), out.stride(0), BITS=scheme.bits,
        GROUP=scheme.group_size, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )
    return out
