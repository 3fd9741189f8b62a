"""Fused DiT norms (Triton on CUDA, the eager torch ops elsewhere): LayerNorm + adaLN modulation in one pass,
the per-head q / k LayerNorm over many short rows, and the gated residual add.

Why: one flow call for 16 clips of 10 s spends 28 % of its GPU time in PyTorch's LayerNorm (130 us per call
on [32 rows x ~1,000 frames, 512] bf16, where reading and writing the tensor takes ~16 us; the q / k norms
run one 64-wide row per thread block) and another ~20 % in the separate multiplies and adds of the
modulation and the gates, each a full pass over the activations (``bench_decoder.py --profile-flow``,
H200, 2026-12-04). Here each is one pass.

Rounding: every elementwise result is rounded to the activation dtype where the eager op rounds it
(``x * (1 + scale) + shift`` and ``x + gate * y`` as three and two rounded ops) and no multiply-add is
fused into one rounding (``enable_fp_fusion=False``), so the modulation and the gated add equal the eager
ops bit for bit. The LayerNorm's mean and variance are float32 sums in another
order than PyTorch's, so a normalised value can differ from ``F.layer_norm``'s in its last bf16 bit
(``tests/test_decoder_fused_norms*.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - CPU-only installs
    triton = tl = None

TILE_ELEMENTS = 8192  # elements per program: 16 rows of the DiT's 512 channels, 128 of a 64-wide head
GATED_BLOCK = 2048


def runs_fused(x: torch.Tensor) -> bool:
    """The Triton kernels take this tensor (CUDA, contiguous rows); otherwise the torch ops run."""
    return triton is not None and x.is_cuda and x.is_contiguous()


if triton is not None:

    @triton.jit
    def _norm_kernel(x_ptr, out_ptr, w_ptr, b_ptr, shift_ptr, scale_ptr, n_rows, width, eps,
                     AFFINE: tl.constexpr, MODULATE: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                     BLOCK_W: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_W)
        cmask = cols < width
        mask = (rows < n_rows)[:, None] & cmask[None, :]
        offs = rows[:, None] * width + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        xf = x.to(tl.float32)
        mean = tl.sum(xf, 1) / width
        centred = tl.where(mask, xf - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, 1) / width + eps)
        y = centred * rstd[:, None]
        if AFFINE:
            w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            y = y * w[None, :] + b[None, :]
        y = y.to(x.dtype)
        if MODULATE:  # x * (1 + scale) + shift, rounded after each op as the eager ops round
            scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
            shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
            factor = (1.0 + scale.to(tl.float32)).to(x.dtype)
            y = (y.to(tl.float32) * factor.to(tl.float32)[None, :]).to(x.dtype)
            y = (y.to(tl.float32) + shift.to(tl.float32)[None, :]).to(x.dtype)
        tl.store(out_ptr + offs, y, mask=mask)

    @triton.jit
    def _gated_add_kernel(x_ptr, y_ptr, gate_ptr, out_ptr, n, width, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0)
        g = tl.load(gate_ptr + offs % width, mask=mask, other=0.0)
        t = (g.to(tl.float32) * y.to(tl.float32)).to(x.dtype)
        tl.store(out_ptr + offs, (x.to(tl.float32) + t.to(tl.float32)).to(x.dtype), mask=mask)


def _norm(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
          shift: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
    width = x.shape[-1]
    rows = x.numel() // width
    block_w = triton.next_power_of_2(width)
    block_rows = max(1, TILE_ELEMENTS // block_w)
    out = torch.empty_like(x)
    dummy = x  # never read: the flags below leave the pointer unused
    _norm_kernel[(triton.cdiv(rows, block_rows),)](
        x, out, weight if weight is not None else dummy, bias if bias is not None else dummy,
        shift.contiguous() if shift is not None else dummy, scale.contiguous() if scale is not None else dummy,
        rows, width, eps, AFFINE=weight is not None, MODULATE=shift is not None, BLOCK_ROWS=block_rows,
        BLOCK_W=block_w, num_warps=8 if block_w >= 512 else 4, enable_fp_fusion=False,
    )
    return out


def _vector(t: torch.Tensor, width: int) -> bool:
    """A per-channel tensor the kernels can broadcast: ``width`` values, every leading size 1."""
    return t.numel() == width and t.shape[-1] == width


def modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                   fused: bool = True) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` (no affine), shift / scale one value per channel."""
    width = x.shape[-1]
    if fused and runs_fused(x) and _vector(shift, width) and _vector(scale, width):
        return _norm(x, eps, shift=shift, scale=scale)
    return F.layer_norm(x, (width,), eps=eps) * (1 + scale) + shift


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
               fused: bool = True) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension (affine when ``weight`` / ``bias`` are given); a strided CUDA
    tensor (the DiT's conv output is a transposed view) is made contiguous first, as PyTorch's kernel does."""
    if fused and x.is_cuda and (weight is None) == (bias is None):
        x = x.contiguous()
        if runs_fused(x):
            return _norm(x, eps, weight=weight, bias=bias)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def gated_add(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """``x + gate * y``, gate one value per channel."""
    width = x.shape[-1]
    if fused and runs_fused(x) and y.is_contiguous() and y.shape == x.shape and _vector(gate, width):
        out = torch.empty_like(x)
        n = x.numel()
        _gated_add_kernel[(triton.cdiv(n, GATED_BLOCK),)](x, y, gate.contiguous(), out, n, width, BLOCK=GATED_BLOCK,
                                                          num_warps=4, enable_fp_fusion=False)
        return out
    return x + gate * y
