"""Upsampling Conformer encoder: token-frame embeddings (25 Hz) -> hidden states at ``up_stride`` x rate.

Layout of the official ``UpsampleConformerEncoderV2`` (inference path):
``embed`` (Linear + LayerNorm, x sqrt(d)) -> pre-lookahead convs (sees ``pre_lookahead_len`` future
frames) -> ``num_blocks`` Conformer layers -> nearest x``up_stride`` + causal conv -> ``up_embed`` ->
``num_up_blocks`` Conformer layers -> ``after_norm``. The Conformer layers are pre-norm
self-attention with ESPnet relative positions (Transformer-XL terms ``pos_bias_u`` / ``pos_bias_v``)
plus a feed-forward block; there is no convolution module.

Batching: rows are right-padded. Padded frames are zeroed before the look-ahead conv (the official
single-clip path pads with zeros there), every other conv is causal, and attention masks padded
keys, so each row's valid frames equal a single-clip run. Module and parameter names follow the
official ``flow.pt`` keys under ``encoder.``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..sdpa_kernels import sdpa_without_cudnn
from .attention import KeyPadding
from .config import EncoderConfig

EMBED_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-12  # norm_mha / norm_ff of the official ConformerEncoderLayer
AFTER_NORM_EPS = 1e-5
POS_ENC_MIN_LEN = 5000  # the official table is built for 5000 positions (grown on demand)
POS_ENC_BASE = 10000.0
LOOKAHEAD_SLOPE = 0.01  # F.leaky_relu default, used after the look-ahead conv
LOOKAHEAD_CONV2_KERNEL = 3

CONFORMER_BACKENDS = ("sdpa", "eager")

_ACTIVATIONS = {
    "hardtanh": nn.Hardtanh, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU, "swish": nn.SiLU, "gelu": nn.GELU,
}


@lru_cache(maxsize=8)
def _rel_table(d_model: int, max_len: int) -> torch.Tensor:
    """ESPnet relative sinusoid table ``[2*max_len - 1, d]``; row ``max_len - 1 - r`` encodes offset r."""
    pos = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(POS_ENC_BASE) / d_model))
    pe_pos = torch.zeros(max_len, d_model)
    pe_neg = torch.zeros(max_len, d_model)
    pe_pos[:, 0::2] = torch.sin(pos * div)
    pe_pos[:, 1::2] = torch.cos(pos * div)
    pe_neg[:, 0::2] = torch.sin(-1 * pos * div)
    pe_neg[:, 1::2] = torch.cos(-1 * pos * div)
    return torch.cat([torch.flip(pe_pos, [0]), pe_neg[1:]], dim=0)


def relative_position_embedding(size: int, d_model: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[2*size - 1, d]``: encodings of relative offsets ``size-1, ..., 0, ..., -(size-1)``."""
    max_len = max(POS_ENC_MIN_LEN, size)
    table = _rel_table(d_model, max_len)
    center = table.shape[0] // 2
    return table[center - size + 1: center + size].to(device=device, dtype=dtype)


def rel_shift(bd_full: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, 2T-1]`` scores against offsets ``T-1..-(T-1)`` -> ``[B, H, T, T]`` with entry (i, j)
    taken at offset ``i - j`` (the ESPnet/Transformer-XL shift, as a strided view)."""
    bd_full = bd_full.contiguous()
    b, h, t, w = bd_full.shape
    return bd_full.as_strided(
        (b, h, t, t), (h * t * w, t * w, w - 1, 1), bd_full.storage_offset() + t - 1
    )


class LinearEmbed(nn.Module):
    """Linear -> LayerNorm, then scaled by sqrt(d) for the relative-position layers (keys ``out.0/1``)."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=EMBED_NORM_EPS))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.xscale


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with relative positions: scores ``((q+u)k + rel_shift((q+v)p)) / sqrt(d_k)``."""

    def __init__(self, heads: int, d_model: int, key_bias: bool):
        super().__init__()
        self.h, self.d_k = heads, d_model // heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model, bias=key_bias)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))
        self.backend = "sdpa"

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
        """``x [B, T, d]``, ``pos_emb [2T-1, d]`` -> ``[B, T, d]``."""
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(-1, self.h, self.d_k).permute(1, 2, 0)  # [H, d_k, 2T-1]
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        bd = rel_shift(torch.matmul(q_v, p))  # [B, H, T, T]
        key_mask = None if padding is None or padding.mask is None else padding.mask[:, None, None, :]
        scale = math.sqrt(self.d_k)
        if self.backend == "sdpa":
            bias = bd / scale
            if key_mask is not None:
                bias = bias.masked_fill(~key_mask, float("-inf"))
            with sdpa_without_cudnn(q_u.device):
                out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias)
        elif self.backend == "eager":
            scores = (torch.matmul(q_u, k.transpose(-2, -1)) + bd) / scale
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            out = torch.matmul(torch.softmax(scores, dim=-1), v)
        else:
            raise ValueError(f"Unknown Conformer attention backend {self.backend!r}; one of {', '.join(CONFORMER_BACKENDS)}.")
        return self.linear_out(out.transpose(1, 2).reshape(b, t, self.h * self.d_k))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, units: int, activation: str):
        super().__init__()
        self.w_1 = nn.Linear(d_model, units)
        self.activation = _ACTIVATIONS[activation]()
        self.w_2 = nn.Linear(units, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-norm: ``x + attn(norm_mha(x))`` then ``x + ff(norm_ff(x))``."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.output_size
        self.self_attn = RelPositionAttention(cfg.attention_heads, d, cfg.key_bias)
        self.feed_forward = FeedForward(d, cfg.linear_units, cfg.activation_type)
        self.norm_mha = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.norm_ff = nn.LayerNorm(d, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, padding)
        return x + self.feed_forward(self.norm_ff(x))


class PreLookaheadLayer(nn.Module):
    """Residual convs that let each frame see ``pre_lookahead_len`` future frames (zeros past the end)."""

    def __init__(self, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, LOOKAHEAD_CONV2_KERNEL)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """``x [B, T, C]``; ``valid [B, T, 1]`` zeroes padded frames so look-ahead reads zeros there."""
        y = x if valid is None else x * valid
        y = F.leaky_relu(self.conv1(F.pad(y.transpose(1, 2), (0, self.lookahead))), LOOKAHEAD_SLOPE)
        y = self.conv2(F.pad(y, (LOOKAHEAD_CONV2_KERNEL - 1, 0)))
        return y.transpose(1, 2) + x


class Upsample1D(nn.Module):
    """Nearest x``stride`` then a causal conv of kernel ``2*stride + 1`` (``[B, C, T]`` -> ``[B, C, stride*T]``)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.repeat_interleave(x, self.stride, dim=2)
        return self.conv(F.pad(x, (self.stride * 2, 0)))


class UpsampleConformerEncoder(nn.Module):
    """``forward(xs [B, T, C], padding)`` -> ``([B, up_stride*T, C], padding at the upsampled rate)``."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.output_size
        self.embed = LinearEmbed(cfg.input_size, d)
        self.pre_lookahead_layer = PreLookaheadLayer(d, cfg.pre_lookahead_len)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_blocks))
        self.up_layer = Upsample1D(d, cfg.up_stride)
        self.up_embed = LinearEmbed(cfg.input_size, d)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_up_blocks))
        self.after_norm = nn.LayerNorm(d, eps=AFTER_NORM_EPS)

    def set_attn_backend(self, backend: str) -> None:
        if backend not in CONFORMER_BACKENDS:
            raise ValueError(f"Conformer attention must be one of {CONFORMER_BACKENDS}, got {backend!r}.")
        for layer in list(self.encoders) + list(self.up_encoders):
            layer.self_attn.backend = backend

    def _pos(self, t: int, like: torch.Tensor) -> torch.Tensor:
        return relative_position_embedding(t, self.cfg.output_size, like.device, like.dtype)

    def forward(self, xs: torch.Tensor, padding: KeyPadding) -> tuple[torch.Tensor, KeyPadding]:
        xs = self.embed(xs)
        xs = self.pre_lookahead_layer(xs, padding.float_mask(xs.dtype))
        pos = self._pos(xs.shape[1], xs)
        for layer in self.encoders:
            xs = layer(xs, pos, padding)
        xs = self.up_layer(xs.transpose(1, 2)).transpose(1, 2)
        stride = self.cfg.up_stride
        up_padding = KeyPadding.from_lengths([n * stride for n in padding.lengths], xs.device, xs.shape[1])
        xs = self.up_embed(xs)
        pos = self._pos(xs.shape[1], xs)
        for layer in self.up_encoders:
            xs = layer(xs, pos, up_padding)
        return self.after_norm(xs), up_padding
