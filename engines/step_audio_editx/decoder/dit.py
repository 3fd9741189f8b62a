"""The flow-matching estimator: a DiT (adaLN-zero blocks with attention, causal conv and MLP).

Predicts the velocity ``v(x_t, t | mu, spk, cond)`` of the conditional flow. Works in ``[B, T, C]``
layout at the mel frame rate (50 Hz). Inputs are stacked along channels in the official order
``[x, mu, spk (broadcast over time), cond]`` (4 x 80 = ``in_channels``). The time step is the same for
every row of a call, so the adaLN modulation is computed once and broadcast.

Module and parameter names follow the official ``flow.pt`` keys under ``decoder.estimator.``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import fused_norms
from .attention import KeyPadding, key_padding_attention
from .config import DiTConfig

# Fixed by the official DiT classes (not stated in the yaml).
TIME_FREQ_DIM = 256  # sinusoidal timestep features
TIME_SCALE = 1000  # t in [0, 1] is scaled to [0, 1000] before the sinusoid
TIME_MAX_PERIOD = 10000
BLOCK_NORM_EPS = 1e-6  # the non-affine LayerNorms before attention / conv / MLP and the final layer
QK_NORM_EPS = 1e-5  # affine LayerNorm over each head's query / key (torch default eps)
CONV_NORM_EPS = 1e-5
CONV_KERNEL = 3
MODULATIONS_PER_BLOCK = 9  # shift, scale, gate for attention, MLP and conv


def timestep_features(t: torch.Tensor, dim: int = TIME_FREQ_DIM, max_period: int = TIME_MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal features of (already scaled) time steps ``t [N]`` -> ``[N, dim]`` (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half).to(t)
    args = t[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [N]`` in [0, 1] -> ``[N, hidden]``."""
        return self.mlp(timestep_features(t * TIME_SCALE).to(self.mlp[0].weight.dtype))


class DiTAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(hidden, inner)
        self.to_k = nn.Linear(hidden, inner)
        self.to_v = nn.Linear(hidden, inner)
        self.q_norm = nn.LayerNorm(head_dim, eps=QK_NORM_EPS)
        self.k_norm = nn.LayerNorm(head_dim, eps=QK_NORM_EPS)
        self.proj = nn.Linear(inner, hidden)
        self.backend = "sdpa"
        self.fused = True  # ``fused_norms`` kernels where they run (``DiT.set_fused_norms``)

    def _head_norm(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return fused_norms.layer_norm(x, norm.weight, norm.bias, norm.eps, self.fused)

    def forward(self, x: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self._head_norm(self.q_norm, self.to_q(x).view(b, t, self.heads, self.head_dim))
        k = self._head_norm(self.k_norm, self.to_k(x).view(b, t, self.heads, self.head_dim))
        v = self.to_v(x).view(b, t, self.heads, self.head_dim)
        out = key_padding_attention(q, k, v, padding, self.backend)
        return self.proj(out.reshape(b, t, self.heads * self.head_dim))


def causal_conv_channels_last(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The left-padded conv1d (no bias) on ``x [B, T, C]`` without leaving that layout: ``[B, T, C_out]``, a view
    whose rows are contiguous per batch entry (``fused_norms`` reads it in place).

    Why: conv1d wants ``[B, C, T]``; the transposed views cost a strided copy in, cuDNN's two layout
    conversions and a strided result that every later op copied again (~30 % of a batched flow call on the
    H200). A contiguous ``[B, T, C]`` tensor IS a channels-last ``[B, C, 1, T]`` image, which cuDNN's NHWC
    kernels read as it lies. The conv pads both ends itself and the first ``T`` outputs are the causal ones,
    so nothing is copied; the bias is left to the kernel that reads the result (cuDNN's path adds it in a
    separate pass, rounded the same way).
    """
    b, t, _ = x.shape
    kernel = weight.shape[-1]
    image = x.contiguous().unsqueeze(1).permute(0, 3, 1, 2)  # [B, C, 1, T], NHWC in memory
    filters = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # [C_out, C, 1, k]
    out = F.conv2d(image, filters, padding=(0, kernel - 1))  # [B, C_out, 1, T + k - 1], NHWC in memory
    return out.permute(0, 2, 3, 1)[:, 0, :t]


class CausalConvBlock(nn.Module):
    """conv(k=3, left-padded) -> LayerNorm -> Mish -> conv(k=3, left-padded), on ``[B, T, C]``.

    Slots 1, 3 and 6 of ``block`` hold the parameters, as in the official ``conv.block.{1,3,6}`` keys.
    """

    def __init__(self, channels: int, kernel: int = CONV_KERNEL):
        super().__init__()
        self.kernel = kernel
        self.block = nn.Sequential(
            nn.Identity(), nn.Conv1d(channels, channels, kernel), nn.Identity(),
            nn.LayerNorm(channels, eps=CONV_NORM_EPS), nn.Mish(),
            nn.Identity(), nn.Conv1d(channels, channels, kernel), nn.Identity(),
        )
        self.fused = True

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return conv(F.pad(x.transpose(1, 2), (self.kernel - 1, 0))).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, bias = self.unbiased(x)
        return y if bias is None else y + bias

    def unbiased(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's output without the last conv's bias, and that bias (None: already added). On CUDA the
        convs stay in the [B, T, C] layout, the first conv's bias and the Mish ride on the norm kernel, and
        the last bias is left to the gated residual add (``DiTBlock``): one pass each, same roundings."""
        first, norm, last = self.block[1], self.block[3], self.block[6]
        if self.fused and fused_norms.kernels_run_on(x.device):
            h = causal_conv_channels_last(x, first.weight)
            h = fused_norms.layer_norm(h, norm.weight, norm.bias, norm.eps, pre_bias=first.bias, mish=True)
            return causal_conv_channels_last(h, last.weight), last.bias
        h = fused_norms.layer_norm(self._conv(first, x), norm.weight, norm.bias, norm.eps, self.fused)
        return self._conv(last, self.block[4](h)), None


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        h = cfg.hidden_size
        self.attn = DiTAttention(h, cfg.num_heads, cfg.head_dim)
        self.mlp = MLP(h, int(h * cfg.mlp_ratio))
        self.conv = CausalConvBlock(h)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, MODULATIONS_PER_BLOCK * h))
        self.fused = True

    def _norm(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """adaLN: the non-affine LayerNorm, then ``* (1 + scale) + shift``."""
        return fused_norms.modulated_norm(x, shift, scale, BLOCK_NORM_EPS, self.fused)

    def forward(self, x: torch.Tensor, c: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
        """``x [B, T, H]``, ``c [1 or B, 1, H]`` (time embedding) -> ``[B, T, H]``."""
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp,
         shift_conv, scale_conv, gate_conv) = self.adaLN_modulation(c).chunk(MODULATIONS_PER_BLOCK, dim=-1)
        x = fused_norms.gated_add(x, gate_msa, self.attn(self._norm(x, shift_msa, scale_msa), padding), self.fused)
        conv, conv_bias = self.conv.unbiased(self._norm(x, shift_conv, scale_conv))
        x = fused_norms.gated_add(x, gate_conv, conv, self.fused, y_bias=conv_bias)
        x = fused_norms.gated_add(x, gate_mlp, self.mlp(self._norm(x, shift_mlp, scale_mlp)), self.fused)
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, out_channels)
        self.fused = True

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(fused_norms.modulated_norm(x, shift, scale, BLOCK_NORM_EPS, self.fused))


class DiT(nn.Module):
    """Velocity estimator. ``forward(x, mu, spks, cond, t, padding)``; see :meth:`forward`."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.in_proj = nn.Linear(cfg.in_channels, cfg.hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.hidden_size, cfg.out_channels)

    def set_attn_backend(self, backend: str) -> None:
        for block in self.blocks:
            block.attn.backend = backend

    def set_fused_norms(self, fused: bool) -> None:
        """Run the norms, modulations and gated adds as ``fused_norms``' kernels (CUDA) or as eager ops."""
        for module in (*self.blocks, *(b.attn for b in self.blocks), *(b.conv for b in self.blocks),
                       self.final_layer):
            module.fused = fused

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor,
        padding: KeyPadding | None = None,
    ) -> torch.Tensor:
        """Velocity ``[B, T, out]`` for noisy mel ``x [B, T, 80]``, encoder mean ``mu [B, T, 80]``,
        projected speaker ``spks [B, 80]``, prompt condition ``cond [B, T, 80]`` and one time ``t``
        (0-dim or ``[1]``, in [0, 1]). ``padding`` marks the valid frames of each row.
        """
        dtype = self.in_proj.weight.dtype
        c = self.t_embedder(t.reshape(1)).unsqueeze(1)  # [1, 1, H]
        spk = spks[:, None, :].expand(-1, x.shape[1], -1)
        h = self.in_proj(torch.cat([x, mu, spk, cond], dim=-1).to(dtype))
        for block in self.blocks:
            h = block(h, c, padding)
        return self.final_layer(h, c)
