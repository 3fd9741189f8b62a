"""HiFT's Snake activation ``x + sin^2(alpha x) / (alpha + eps)``, one pass on CUDA.

Why: as eager ops it is six passes over the activations, two of them broadcasting multiplies that run
PyTorch's slow non-vectorised kernel. They were a third of a batched vocoder call's GPU time (16 clips of
10 s, H200). The kernel rounds where the eager ops round (each op to the activation dtype, no fused
multiply-add, libdevice's sine, the reciprocal computed by torch as before), so it equals them bit for
bit (``tests/test_decoder_snake_cuda.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from .triton_support import device_math, kernels_run_on, tl, triton

SNAKE_EPS = 1e-9
SNAKE_BLOCK = 1024  # elements per program

if triton is not None:

    @triton.jit
    def _snake_kernel(x_ptr, alpha_ptr, inv_ptr, out_ptr, n, length, channels, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        c = (offs // length) % channels
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        a = tl.load(alpha_ptr + c, mask=mask, other=0.0)
        inv = tl.load(inv_ptr + c, mask=mask, other=0.0)
        s = device_math.sin((x.to(tl.float32) * a.to(tl.float32)).to(x.dtype).to(tl.float32)).to(x.dtype)
        sq = (s.to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        t = (inv.to(tl.float32) * sq.to(tl.float32)).to(x.dtype)
        tl.store(out_ptr + offs, (x.to(tl.float32) + t.to(tl.float32)).to(x.dtype), mask=mask)


def snake(x: torch.Tensor, alpha: torch.Tensor, eps: float = SNAKE_EPS) -> torch.Tensor:
    """Snake over ``x [B, C, T]`` with one ``alpha`` per channel ``[C]``."""
    inv = 1.0 / (alpha + eps)  # the eager op, so the kernel multiplies by the very same values
    if x.dim() == 3 and x.is_contiguous() and alpha.dtype == x.dtype and kernels_run_on(x.device):
        out = torch.empty_like(x)
        n = x.numel()
        if n:
            _snake_kernel[(triton.cdiv(n, SNAKE_BLOCK),)](x, alpha, inv.contiguous(), out, n, x.shape[2], x.shape[1],
                                                          BLOCK=SNAKE_BLOCK, num_warps=4, enable_fp_fusion=False)
        return out
    return x + inv[None, :, None] * torch.sin(x * alpha[None, :, None]).pow(2)


class Snake(nn.Module):
    """``alpha`` per channel (key ``...activations1.N.alpha``, as in the official ``hift.pt``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake(x, self.alpha)
