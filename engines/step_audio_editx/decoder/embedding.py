"""Dual-codebook token embedding of the flow decoder.

Each 25 Hz decoder frame is a pair ``(col0, col1)`` of indices into ONE shared table of
``vocab_size`` (5,121) rows: col0 is the vq02 code or the vq02 pad 1024, col1 is 1025 + the vq06
code (see ``frontend.codes.regroup``). Both lookups are concatenated: ``[B, T, 2] -> [B, T, input_size]``.
Parameter name follows the official ``flow.pt`` key ``input_embedding.embedding.weight``.
"""

from __future__ import annotations

import torch
from torch import nn


class DualCodebookEmbedding(nn.Module):
    def __init__(self, vocab_size: int, input_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, input_size // 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [B, T, 2]`` int64 -> ``[B, T, input_size]``."""
        return torch.cat([self.embedding(frames[..., 0]), self.embedding(frames[..., 1])], dim=-1)
