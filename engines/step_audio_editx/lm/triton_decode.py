"""Fused CUDA kernels (Triton) for the Step1 decode step: the GPU side of ``decode_ops``.

Why: a decode step at batch <= 16 is bound by reading the weights (6.6 GB) and by the number of kernels
(~300 per step even inside a CUDA graph). These kernels fuse what plain torch runs as many small
launches, with the rounding points of the reference so the results agree with the plain path:

* ``add_rms_norm``: residual add + RMSNorm in one pass per row; ``silu_mul``: SwiGLU's product.
* ``decode_attention`` (flash-decoding with sqrt-ALiBi in the kernel) is ``triton_attention``.
* ``skinny_linear`` (tensor cores, 1-16 rows) and ``gemv`` (CUDA cores, one row): ``x @ W^T`` that can
  normalise x first (RMSNorm), form SwiGLU's product on the fly, and add into the residual in place. The
  session times them against cuBLAS per matrix inside CUDA graphs and keeps the fastest.
* The sampler (guard, constraint, noise, argmax, bookkeeping in one launch) is ``triton_sampler``.

Every launcher takes torch tensors and returns torch tensors; nothing here syncs with the host, so all of
it can be captured in a CUDA graph (after one eager call has compiled the kernels). With ``pdl=True`` a
launcher starts its kernel as a programmatic dependent of the previous one (``triton_pdl``: prefetch,
wait, the same code; bit-identical results).
"""

from __future__ import annotations

import logging

import torch

from ..triton_import import HAS_TRITON, tl, triton
from ..triton_import import device_math as _math
from . import triton_pdl

logger = logging.getLogger(__name__)

MIN_DOT_ROWS = 16  # tl.dot needs at least 16 rows
SILU_BLOCK = 1024


def available() -> bool:
    return HAS_TRITON and torch.cuda.is_available()


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _block_m(rows: int) -> int:
    """The tensor-core kernels' row tile for ``rows`` rows (at least the smallest MMA tile)."""
    return max(MIN_DOT_ROWS, _pow2(rows))


def _even(n: int, k: int, block_n: int, block_k: int) -> bool:
    """Whether an [n, k] matrix is whole tiles of [block_n, block_k], so its loads need no masks."""
    return n % block_n == 0 and k % block_k == 0


if HAS_TRITON:

    # --- norms and SwiGLU -------------------------------------------------------------------------

    @triton.jit
    def _add_rms_norm_kernel(resid_ptr, delta_ptr, weight_ptr, out_ptr, n_cols, eps,
                             stride_resid, stride_delta, stride_out,
                             HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            triton_pdl.enter()
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(resid_ptr + row * stride_resid + cols, mask=mask, other=0.0)
        if HAS_DELTA:
            d = tl.load(delta_ptr + row * stride_delta + cols, mask=mask, other=0.0)
            x = (x.to(tl.float32) + d.to(tl.float32)).to(x.dtype)
            tl.store(resid_ptr + row * stride_resid + cols, x, mask=mask)
        xf = x.to(tl.float32)
        variance = tl.sum(xf * xf, axis=0) / n_cols
        factor = _math.rsqrt(variance + eps).to(x.dtype).to(tl.float32)
        y = (xf * factor).to(x.dtype)
        w = tl.load(weight_ptr + cols, mask=mask, other=0.0)
        y = (y.to(tl.float32) * w.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + row * stride_out + cols, y, mask=mask)

    @triton.jit
    def _silu(g):
        """torch's SiLU of a low-precision tensor: computed in float32, rounded once."""
        gf = g.to(tl.float32)
        return (gf / (1.0 + _math.exp(-gf))).to(g.dtype)

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, n_inner, stride_gu, stride_out, BLOCK: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            triton_pdl.enter()
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_inner
        g = tl.load(gu_ptr + row * stride_gu + cols, mask=mask, other=0.0)
        u = tl.load(gu_ptr + row * stride_gu + n_inner + cols, mask=mask, other=0.0)
        y = (_silu(g).to(tl.float32) * u.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + row * stride_out + cols, y, mask=mask)

    # --- matmuls for a few rows -------------------------------------------------------------------

    @triton.jit
    def _prologue(a, x_ptr, offs, rk, kmask, factor, norm_ptr, K, PROLOGUE: tl.constexpr):
        """The GEMM input tile: x (0), RMSNorm(x) * norm (1), or SwiGLU of x = [gate | up] (2)."""
        if PROLOGUE == 1:
            f = factor.to(a.dtype).to(tl.float32)
            a = (a.to(tl.float32) * f).to(a.dtype)
            nw = tl.load(norm_ptr + rk, mask=kmask, other=0.0)
            a = (a.to(tl.float32) * nw.to(tl.float32)).to(nw.dtype)
        if PROLOGUE == 2:
            u = tl.load(x_ptr + offs + K, mask=kmask, other=0.0)
            a = (_silu(a).to(tl.float32) * u.to(tl.float32)).to(u.dtype)
        return a

    @triton.jit
    def _rms_factor(x_ptr, K, eps, BLOCK_K: tl.constexpr, AHEAD: tl.constexpr = 0):
        """1 / RMS of one row x[K] (float32 sum of squares over BLOCK_K-wide tiles): RMSNorm's scale. AHEAD:
        each tile's load is issued one iteration early (the same sums in the same order)."""
        sq = tl.zeros([BLOCK_K], tl.float32)
        if AHEAD:
            nxt = tl.load(x_ptr + tl.arange(0, BLOCK_K), mask=tl.arange(0, BLOCK_K) < K, other=0.0)
        for k0 in range(0, K, BLOCK_K):
            if AHEAD:
                xk = nxt.to(tl.float32)
                rk = k0 + BLOCK_K + tl.arange(0, BLOCK_K)
                nxt = tl.load(x_ptr + rk, mask=rk < K, other=0.0)
            else:
                rk = k0 + tl.arange(0, BLOCK_K)
                xk = tl.load(x_ptr + rk, mask=rk < K, other=0.0).to(tl.float32)
            sq += xk * xk
        return _math.rsqrt(tl.sum(sq, 0) / K + eps)

    @triton.jit
    def _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_K: tl.constexpr):
        """A tensor-core matmul's rows of x (``rm``, ``rm < M``) and, for the RMSNorm prologue, their
        ``_rms_factor_rows`` (else zeros)."""
        rm = tl.arange(0, BLOCK_M)
        mmask = rm < M
        factor = tl.zeros([BLOCK_M, 1], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor_rows(x_ptr, rm, mmask, stride_x, K, eps, BLOCK_M, BLOCK_K)
        return rm, mmask, factor

    @triton.jit
    def _rms_factor_rows(x_ptr, rm, mmask, stride_x, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """``_rms_factor`` of rows ``rm`` of x[M, K], as a [BLOCK_M, 1] column."""
        sq = tl.zeros([BLOCK_M], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :],
                         mask=mmask[:, None] & (rk[None, :] < K), other=0.0).to(tl.float32)
            sq += tl.sum(xk * xk, 1)
        return _math.rsqrt(sq / K + eps)[:, None]

    @triton.jit
    def _store_out(out_ptr, offs, mask, out, RESIDUAL: tl.constexpr):
        """Store a matmul result (in the output's dtype) at ``offs``; RESIDUAL adds it to what is there first
        (float32 sum, one rounding): the in-place residual add of the o and down projections."""
        if RESIDUAL:
            r = tl.load(out_ptr + offs, mask=mask, other=0.0)
            out = (out.to(tl.float32) + r.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offs, out, mask=mask)

    @triton.jit(do_not_specialize=["M"])  # one binary for every batch bucket
    def _skinny_linear_kernel(x_ptr, w_ptr, out_ptr, norm_ptr, M, N, K, eps, stride_x, stride_w, stride_out,
                              PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
                              PRECISION: tl.constexpr, PDL: tl.constexpr, LINE: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ W[N, K]^T on tensor cores (M <= BLOCK_M). RESIDUAL adds into out."""
        pid = tl.program_id(0)
        if PDL:
            triton_pdl.enter_rows(w_ptr, pid * BLOCK_N + tl.arange(0, BLOCK_N), N, K, stride_w, BLOCK_N, BLOCK_K,
                                  LINE)
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
        _skinny_tile(pid, rm, mmask, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_x, stride_w, stride_out,
                     PROLOGUE, RESIDUAL, BLOCK_M, BLOCK_N, BLOCK_K, EVEN, PRECISION, PDL)

    @triton.jit
    def _skinny_tile(tile, rm, mmask, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_x, stride_w, stride_out,
                     PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, EVEN: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr):
        """Columns ``[tile * BLOCK_N, +BLOCK_N)`` of ``_skinny_linear_kernel`` for rows ``rm`` (``factor``: their
        RMSNorm scales for PROLOGUE 1): one program's work there, any program's in ``persistent_layer``."""
        rn = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < K
            offs = rm[:, None] * stride_x + rk[None, :]
            xmask = mmask[:, None] & kmask[None, :]
            a = tl.load(x_ptr + offs, mask=xmask, other=0.0)
            a = _prologue(a, x_ptr, offs, rk[None, :], xmask, factor, norm_ptr, K, PROLOGUE)
            if EVEN:
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :])
            else:
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :], mask=nmask[:, None] & kmask[None, :],
                            other=0.0)
            acc += tl.dot(a.to(w.dtype), tl.trans(w), input_precision=PRECISION)
        if PDL:
            triton_pdl.release()
        _store_out(out_ptr, rm[:, None] * stride_out + rn[None, :], mmask[:, None] & nmask[None, :],
                   acc.to(out_ptr.dtype.element_ty), RESIDUAL)

    @triton.jit
    def _gemv_tile(tile, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_w, PROLOGUE: tl.constexpr,
                   RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
                   PDL: tl.constexpr):
        """Rows ``[tile * BLOCK_N, +BLOCK_N)`` of ``_gemv_kernel`` (``factor``: x's RMSNorm scale for PROLOGUE 1):
        one program's work there, any program's in the persistent layer kernel (``persistent_layer``)."""
        rn = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < K
            if EVEN:
                a = tl.load(x_ptr + rk)
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :])
            else:
                a = tl.load(x_ptr + rk, mask=kmask, other=0.0)
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :], mask=nmask[:, None] & kmask[None, :],
                            other=0.0)
            a = _prologue(a, x_ptr, rk, rk, kmask, factor, norm_ptr, K, PROLOGUE)
            acc += w.to(tl.float32) * a.to(tl.float32)[None, :]
        if PDL:
            triton_pdl.release()
        out = tl.sum(acc, 1).to(out_ptr.dtype.element_ty)
        _store_out(out_ptr, rn, nmask, out, RESIDUAL)

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, out_ptr, norm_ptr, N, K, eps, stride_w,
                     PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, EVEN: tl.constexpr, PDL: tl.constexpr, LINE: tl.constexpr):
        """out[N] (+)= f(x)[K] @ W[N, K]^T for ONE row on CUDA cores: W streamed in [BLOCK_N, BLOCK_K] tiles,
        float32 products accumulated per lane and reduced once at the end."""
        pid = tl.program_id(0)
        if PDL:
            triton_pdl.enter_rows(w_ptr, pid * BLOCK_N + tl.arange(0, BLOCK_N), N, K, stride_w, BLOCK_N, BLOCK_K,
                                  LINE)
        factor = tl.zeros([], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor(x_ptr, K, eps, BLOCK_K)
        _gemv_tile(pid, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_w, PROLOGUE, RESIDUAL, BLOCK_N,
                   BLOCK_K, EVEN, PDL)


def _pdl(pdl: bool) -> dict:
    """The kernel flag and the launch option of a programmatic dependent launch (``triton_pdl``)."""
    return {"PDL": True, "launch_pdl": True} if pdl else {"PDL": False}


def prologue_code(norm_weight: torch.Tensor | None, swiglu: bool) -> int:
    """The matmul kernels' PROLOGUE: RMSNorm (1), SwiGLU product (2) or x as it is (0); see ``_prologue``."""
    return 1 if norm_weight is not None else (2 if swiglu else 0)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def add_rms_norm(resid: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 pdl: bool = False) -> torch.Tensor:
    """``resid += delta`` in place (when given), then RMSNorm(resid) * weight; [B, C] -> [B, C]."""
    rows, cols = resid.shape
    out = torch.empty_like(resid)
    _add_rms_norm_kernel[(rows,)](
        resid, delta if delta is not None else resid, weight, out, cols, eps,
        resid.stride(0), delta.stride(0) if delta is not None else 0, out.stride(0),
        HAS_DELTA=delta is not None, BLOCK=_pow2(cols), num_warps=8 if cols >= 2048 else 4, **_pdl(pdl),
    )
    return out


def silu_mul(gate_up: torch.Tensor, pdl: bool = False) -> torch.Tensor:
    rows, width = gate_up.shape
    inner = width // 2
    out = torch.empty(rows, inner, dtype=gate_up.dtype, device=gate_up.device)
    _silu_mul_kernel[(rows, triton.cdiv(inner, SILU_BLOCK))](gate_up, out, inner, gate_up.stride(0), out.stride(0),
                                                             BLOCK=SILU_BLOCK, num_warps=4, **_pdl(pdl))
    return out


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, config: tuple[int, int, int, int],
                  norm_weight: torch.Tensor | None = None, eps: float = 0.0, swiglu: bool = False,
                  residual: torch.Tensor | None = None, pdl: bool = False) -> torch.Tensor:
    """``f(x) @ weight.T`` for M <= 16 rows on tensor cores, f = RMSNorm (``norm_weight``), SwiGLU product
    (``swiglu``: x = [gate | up]) or identity. With ``residual`` the result is added to it IN PLACE.
    ``pdl``: launched as a programmatic dependent that prefetches its first weight tile (``triton_pdl``)."""
    rows = x.shape[0]
    n, k = weight.shape
    out = residual if residual is not None else torch.empty(rows, n, dtype=weight.dtype, device=x.device)
    block_n, block_k, warps, stages = config
    prologue = prologue_code(norm_weight, swiglu)
    _skinny_linear_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, norm_weight if norm_weight is not None else weight, rows, n, k, eps,
        x.stride(0), weight.stride(0), out.stride(0),
        PROLOGUE=prologue, RESIDUAL=residual is not None, BLOCK_M=_block_m(rows),
        BLOCK_N=block_n, BLOCK_K=block_k, EVEN=_even(n, k, block_n, block_k),
        PRECISION=_precision(weight.dtype), num_warps=warps, num_stages=stages,
        LINE=triton_pdl.line_elements(weight.dtype), **_pdl(pdl),
    )
    return out


def gemv(x: torch.Tensor, weight: torch.Tensor, config: tuple[int, int, int, int],
         norm_weight: torch.Tensor | None = None, eps: float = 0.0, swiglu: bool = False,
         residual: torch.Tensor | None = None, pdl: bool = False) -> torch.Tensor:
    """``skinny_linear`` for exactly one row, on CUDA cores (x [1, K] or [1, 2K] for SwiGLU)."""
    n, k = weight.shape
    out = residual if residual is not None else torch.empty(1, n, dtype=weight.dtype, device=x.device)
    block_n, block_k, warps, stages = config
    prologue = prologue_code(norm_weight, swiglu)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, norm_weight if norm_weight is not None else weight, n, k, eps, weight.stride(0),
        PROLOGUE=prologue, RESIDUAL=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k,
        EVEN=_even(n, k, block_n, block_k), num_warps=warps, num_stages=stages,
        LINE=triton_pdl.line_elements(weight.dtype), **_pdl(pdl),
    )
    return out
