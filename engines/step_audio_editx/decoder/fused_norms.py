"""Fused DiT norms (Triton on CUDA, the eager torch ops elsewhere): LayerNorm + adaLN modulation in one pass,
the per-head q / k LayerNorm over many short rows, the conv block's LayerNorm with the conv's bias before it
and the Mish after it, and the gated residual add (with the last conv's bias). Both read a conv's output view
in place (rows contiguous per clip, ``_row_segments``): ``dit.causal_conv_channels_last`` leaves no copy.

Why: one flow call for 16 clips of 10 s spends 28 % of its GPU time in PyTorch's LayerNorm (130 us per call
on [32 rows x ~1,000 frames, 512] bf16, where reading and writing the tensor takes ~16 us; the q / k norms
run one 64-wide row per thread block) and another ~20 % in the separate multiplies and adds of the
modulation and the gates, each a full pass over the activations (``bench_decoder.py --profile-flow``,
H200, 2026-12-04). Here each is one pass.

Rounding: every elementwise result is rounded to the activation dtype where the eager op rounds it
(``x * (1 + scale) + shift`` and ``x + gate * y`` as three and two rounded ops; a conv's bias as PyTorch's
separate add after cuDNN's conv; Mish with libdevice's functions, as PyTorch's kernel) and no multiply-add is
fused into one rounding (``enable_fp_fusion=False``), so the modulation, the biases, the Mish and the gated
add equal the eager ops bit for bit. The LayerNorm's mean and variance are float32 sums in another
order than PyTorch's, so a normalised value can differ from ``F.layer_norm``'s in its last bf16 bit
(``tests/test_decoder_fused_norms*.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .triton_support import device_math, kernels_run_on, tl, triton

TILE_ELEMENTS = 8192  # elements per program: 16 rows of the DiT's 512 channels, 128 of a 64-wide head
GATED_BLOCK = 2048


def runs_fused(x: torch.Tensor) -> bool:
    """The Triton kernels take this tensor (contiguous, on a GPU that runs them); otherwise the torch ops run."""
    return x.is_contiguous() and kernels_run_on(x.device)


if triton is not None:

    @triton.jit
    def _norm_kernel(x_ptr, out_ptr, w_ptr, b_ptr, shift_ptr, scale_ptr, pre_ptr, n_rows, width, eps, seg_rows,
                     seg_stride, AFFINE: tl.constexpr, MODULATE: tl.constexpr, PRE_BIAS: tl.constexpr,
                     MISH: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.arange(0, BLOCK_W)
        cmask = cols < width
        mask = (rows < n_rows)[:, None] & cmask[None, :]
        offs = rows[:, None] * width + cols[None, :]
        src = (rows // seg_rows * seg_stride + rows % seg_rows * width)[:, None] + cols[None, :]
        x = tl.load(x_ptr + src, mask=mask, other=0.0)
        if PRE_BIAS:  # the conv's bias, added and rounded as the separate add after cuDNN's conv
            pre = tl.load(pre_ptr + cols, mask=cmask, other=0.0)
            x = (x.to(tl.float32) + pre.to(tl.float32)[None, :]).to(x.dtype)
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
        if MISH:  # x * tanh(log1p(exp(x))) in float32, PyTorch's formula
            v = y.to(tl.float32)
            y = (v * device_math.tanh(device_math.log1p(device_math.exp(v)))).to(x.dtype)
        tl.store(out_ptr + offs, y, mask=mask)

    @triton.jit
    def _gated_add_kernel(x_ptr, y_ptr, gate_ptr, bias_ptr, out_ptr, n, width, seg, seg_stride,
                          Y_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        y = tl.load(y_ptr + offs // seg * seg_stride + offs % seg, mask=mask, other=0.0)
        if Y_BIAS:  # y's own bias first, rounded as the separate add after cuDNN's conv
            yb = tl.load(bias_ptr + offs % width, mask=mask, other=0.0)
            y = (y.to(tl.float32) + yb.to(tl.float32)).to(y.dtype)
        g = tl.load(gate_ptr + offs % width, mask=mask, other=0.0)
        t = (g.to(tl.float32) * y.to(tl.float32)).to(x.dtype)
        tl.store(out_ptr + offs, (x.to(tl.float32) + t.to(tl.float32)).to(x.dtype), mask=mask)


def _row_segments(x: torch.Tensor) -> tuple[int, int] | None:
    """How the kernels find the rows of ``x [..., C]``: (rows per segment, elements between segments). A
    contiguous tensor is one segment; ``[B, T, C]`` with contiguous rows inside each batch entry (the DiT's conv
    output, a slice of a longer padded sequence) has one segment per entry. None: other strides."""
    width = x.shape[-1]
    if x.is_contiguous():
        return max(1, x.numel() // max(width, 1)), 0
    if x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == width:
        return x.shape[1], x.stride(0)
    return None


def _norm(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
          shift: torch.Tensor | None = None, scale: torch.Tensor | None = None,
          pre_bias: torch.Tensor | None = None, mish: bool = False) -> torch.Tensor:
    segments = _row_segments(x)
    if segments is None:
        x = x.contiguous()
        segments = _row_segments(x)
    width = x.shape[-1]
    rows = x.numel() // width
    block_w = triton.next_power_of_2(width)
    block_rows = max(1, TILE_ELEMENTS // block_w)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dummy = out  # never read: the flags below leave the pointer unused
    _norm_kernel[(triton.cdiv(rows, block_rows),)](
        x, out, weight if weight is not None else dummy, bias if bias is not None else dummy,
        shift.contiguous() if shift is not None else dummy, scale.contiguous() if scale is not None else dummy,
        pre_bias if pre_bias is not None else dummy, rows, width, eps, *segments,
        AFFINE=weight is not None, MODULATE=shift is not None, PRE_BIAS=pre_bias is not None, MISH=mish,
        BLOCK_ROWS=block_rows, BLOCK_W=block_w, num_warps=8 if block_w >= 512 else 4, enable_fp_fusion=False,
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
               fused: bool = True, pre_bias: torch.Tensor | None = None, mish: bool = False) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension (affine when ``weight`` / ``bias`` are given). ``pre_bias``: a
    per-channel bias added to ``x`` first (a conv's, left out of the conv); ``mish``: Mish of the result. The
    kernel reads ``x`` in place when its rows are contiguous per batch entry (``_row_segments``)."""
    width = x.shape[-1]
    if (fused and kernels_run_on(x.device) and (weight is None) == (bias is None)
            and (pre_bias is None or _vector(pre_bias, width))):
        return _norm(x, eps, weight=weight, bias=bias, pre_bias=pre_bias, mish=mish)
    out = F.layer_norm(x if pre_bias is None else x + pre_bias, (width,), weight, bias, eps)
    return F.mish(out) if mish else out


def gated_add(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, fused: bool = True,
              y_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x + gate * y`` (``y + y_bias`` first when given), gate and bias one value per channel; ``y`` may be a
    view whose rows are contiguous per batch entry (``_row_segments``)."""
    width = x.shape[-1]
    segments = _row_segments(y)
    if (fused and runs_fused(x) and segments is not None and y.shape == x.shape and _vector(gate, width)
            and (y_bias is None or _vector(y_bias, width))):
        out = torch.empty_like(x)
        n = x.numel()
        seg_rows, seg_stride = segments
        _gated_add_kernel[(triton.cdiv(n, GATED_BLOCK),)](
            x, y, gate.contiguous(), y_bias if y_bias is not None else gate, out, n, width,
            seg_rows * width if seg_stride else n, seg_stride, Y_BIAS=y_bias is not None, BLOCK=GATED_BLOCK,
            num_warps=4, enable_fp_fusion=False)
        return out
    return x + gate * (y if y_bias is None else y + y_bias)
