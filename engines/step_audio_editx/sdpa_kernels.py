"""Which fused kernels ``scaled_dot_product_attention`` may use on CUDA.

On Hopper, torch >= 2.9 prefers cuDNN attention, which builds an execution plan for every new sequence
length (measured on an H100: 1-2 s for the first length, ~95 ms for each new one). Our lengths change
with every clip, so every SDPA call of the pack runs under ``sdpa_without_cudnn``: flash attention when
the inputs allow it, else the memory-efficient kernel (the one that takes a float bias), else math.
"""

from __future__ import annotations

import contextlib

import torch

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - old torch: SDPA picks its kernel itself
    SDPBackend = None
    sdpa_kernel = None


@contextlib.contextmanager
def sdpa_without_cudnn(device: torch.device):
    if device.type != "cuda" or sdpa_kernel is None:
        yield
        return
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield
