"""The operations of one Step1 decode step, as plain torch ops (the reference, used on CPU).

A decode step feeds one token per row through the layers with a static KV cache. Each row r owns the
cache slots ``[0, kv_len[r])``: the prompt, then one slot per generated token, with no padding (rows of
different lengths simply have different ``kv_len``), so a key's slot IS its sqrt-ALiBi position and the
bias needs no table: ``-slope[h] * sqrt(query_slot - key_slot)``. ``kv_len[r] == 0`` marks a row that
no longer runs (finished, or batch padding): it writes nothing and its output is zeros.

Shapes (B rows, H query heads in G groups of head dim D, hidden size C):

* ``rms_norm(x [B, C])``, ``add_rms_norm(resid [B, C] (updated in place), delta [B, C])`` -> ``[B, C]``
* ``silu_mul(gate_up [B, 2I])`` -> ``[B, I]``
* ``decode_attention(qkv [B, (H + 2G) * D], keys/values [B, G, L, D], kv_len [B])`` -> ``[B, H * D]``;
  the new token's key and value are written at slot ``kv_len - 1`` first.

``triton_decode.py`` implements the same functions as fused GPU kernels (same rounding points); the
rounding matches ``step1.py``: RMSNorm's factor is cast to the activation dtype before the products,
SiLU is computed in float32 and rounded, the bias is rounded to the activation dtype as the dense
bias of the model is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionShape:
    """Head layout of one model: query heads, KV groups, head dim, and the score scale."""

    num_heads: int
    num_groups: int
    head_dim: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_groups

    @property
    def scaling(self) -> float:
        return self.head_dim ** -0.5


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Step1RMSNorm: ``x * rsqrt(mean(x.float()^2) + eps).to(x.dtype) * weight``."""
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(variance + eps).to(x.dtype) * weight


def add_rms_norm(resid: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``resid += delta`` (in place, rounded to its dtype), then ``rms_norm(resid)``."""
    resid.add_(delta)
    return rms_norm(resid, weight, eps)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's product for a fused [gate | up] projection output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def split_qkv(qkv: torch.Tensor, shape: AttentionShape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, (H + 2G) * D]`` -> query ``[B, H, D]``, key ``[B, G, D]``, value ``[B, G, D]``."""
    heads, groups, dim = shape.num_heads, shape.num_groups, shape.head_dim
    batch = qkv.shape[0]
    query = qkv[:, : heads * dim].view(batch, heads, dim)
    key = qkv[:, heads * dim: (heads + groups) * dim].view(batch, groups, dim)
    value = qkv[:, (heads + groups) * dim:].view(batch, groups, dim)
    return query, key, value


def write_new_kv(keys: torch.Tensor, values: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 kv_len: torch.Tensor) -> None:
    """Store each running row's new key/value ``[B, G, D]`` at slot ``kv_len - 1`` of ``[B, G, L, D]``."""
    rows = torch.arange(keys.shape[0], device=keys.device)
    slot = (kv_len.long() - 1).clamp(min=0)
    running = (kv_len > 0)[:, None, None]
    keys[rows, :, slot] = torch.where(running, key, keys[rows, :, slot])
    values[rows, :, slot] = torch.where(running, value, values[rows, :, slot])


def decode_attention(qkv: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, kv_len: torch.Tensor,
                     slopes: torch.Tensor, shape: AttentionShape, kv_limit: int | None = None) -> torch.Tensor:
    """One query per row over its cached keys plus itself, with sqrt-ALiBi. Returns ``[B, H * D]``.

    ``kv_limit``: read only slots ``[0, kv_limit)`` (must cover every ``kv_len``); None = all L slots.
    """
    batch = qkv.shape[0]
    query, key, value = split_qkv(qkv, shape)
    write_new_kv(keys, values, key, value, kv_len)
    length = keys.shape[2] if kv_limit is None else kv_limit
    keys, values = keys[:, :, :length], values[:, :, :length]
    groups, per_group, dim = shape.num_groups, shape.heads_per_group, shape.head_dim
    query = query.view(batch, groups, per_group, dim)
    scores = torch.matmul(query.float(), keys.float().transpose(-1, -2)) * shape.scaling  # [B, G, QH, L]
    slots = torch.arange(length, device=qkv.device)
    distance = (kv_len.long()[:, None] - 1 - slots[None, :])  # [B, L]
    allowed = distance >= 0
    root = distance.clamp(min=0).to(torch.float32).sqrt()
    bias = (-slopes.view(groups, per_group)[None, :, :, None] * root[:, None, None, :]).to(qkv.dtype).float()
    scores = (scores + bias).masked_fill(~allowed[:, None, None, :], float("-inf"))
    scores = scores.masked_fill(~(kv_len > 0)[:, None, None, None], 0.0)  # rows that do not run: no NaN
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, values.float())  # [B, G, QH, D]
    out = out.masked_fill(~(kv_len > 0)[:, None, None, None], 0.0)
    return out.reshape(batch, shape.num_heads * dim).to(qkv.dtype)
