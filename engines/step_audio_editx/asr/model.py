"""The recognition half of the Paraformer checkpoint: CIF predictor (``CifPredictorV2``) and decoder
(``ParaformerSANMDecoder``), with the official parameter names under ``predictor.`` and ``decoder.``.

The encoder is the streaming SAN-M of ``frontend/paraformer.py`` (the one vq02 runs). Shapes and
options come from ``config.yaml`` (``predictor_conf``, ``decoder_conf``); the vocabulary from ``tokens.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..frontend.paraformer import ParaformerFormatError

LAYER_NORM_EPS = 1e-12  # FunASR's LayerNorm


@dataclass(frozen=True)
class CifConfig:
    """``predictor_conf`` of ``config.yaml`` (CifPredictorV2)."""

    idim: int
    threshold: float = 1.0
    l_order: int = 1
    r_order: int = 1
    tail_threshold: float = 0.45
    smooth_factor: float = 1.0
    noise_threshold: float = 0.0

    @classmethod
    def from_config(cls, conf: Mapping[str, Any], idim: int) -> CifConfig:
        d = cls(idim=idim)
        return cls(
            idim=int(conf.get("idim", idim)),
            threshold=float(conf.get("threshold", d.threshold)),
            l_order=int(conf.get("l_order", d.l_order)),
            r_order=int(conf.get("r_order", d.r_order)),
            tail_threshold=float(conf.get("tail_threshold", d.tail_threshold)),
            smooth_factor=float(conf.get("smooth_factor", d.smooth_factor)),
            noise_threshold=float(conf.get("noise_threshold", d.noise_threshold)),
        )


@dataclass(frozen=True)
class DecoderConfig:
    """``decoder_conf`` of ``config.yaml`` (ParaformerSANMDecoder), plus the vocabulary and memory widths."""

    vocab_size: int
    width: int  # the encoder output size (attention_dim)
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 16
    att_layer_num: int = 16
    kernel_size: int = 11
    sanm_shift: int = 5

    @classmethod
    def from_config(cls, conf: Mapping[str, Any], vocab_size: int, width: int) -> DecoderConfig:
        d = cls(vocab_size=vocab_size, width=width)
        num_blocks = int(conf.get("num_blocks", d.num_blocks))
        return cls(
            vocab_size=vocab_size,
            width=width,
            attention_heads=int(conf.get("attention_heads", d.attention_heads)),
            linear_units=int(conf.get("linear_units", d.linear_units)),
            num_blocks=num_blocks,
            att_layer_num=int(conf.get("att_layer_num", num_blocks)),
            kernel_size=int(conf.get("kernel_size", d.kernel_size)),
            sanm_shift=int(conf.get("sanm_shfit", d.sanm_shift)),  # sic: FunASR's spelling
        )

    @property
    def fsmn_left(self) -> int:
        """Left zero padding of the decoder FSMN (the right padding is ``kernel_size - 1 - left``)."""
        return (self.kernel_size - 1) // 2 + max(self.sanm_shift, 0)


class CifPredictor(nn.Module):
    """Per-frame CIF weights (alphas) of one chunk window: conv(l_order, r_order) -> ReLU -> linear -> sigmoid."""

    def __init__(self, cfg: CifConfig):
        super().__init__()
        self.cfg = cfg
        self.cif_conv1d = nn.Conv1d(cfg.idim, cfg.idim, cfg.l_order + cfg.r_order + 1)
        self.cif_output = nn.Linear(cfg.idim, 1)

    def alphas(self, windows: torch.Tensor) -> torch.Tensor:
        """``[G, W, D]`` windows -> ``[G, W]`` alphas (each window zero-padded on its own, as forward_chunk does)."""
        x = F.pad(windows.transpose(1, 2), (self.cfg.l_order, self.cfg.r_order))
        h = torch.relu(self.cif_conv1d(x)).transpose(1, 2)
        a = torch.sigmoid(self.cif_output(h)).squeeze(-1)
        return torch.relu(a * self.cfg.smooth_factor - self.cfg.noise_threshold)


class _DecoderFeedForward(nn.Module):
    """w_2(LayerNorm(ReLU(w_1 x))), w_2 without bias (PositionwiseFeedForwardDecoderSANM)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim, bias=False)
        self.norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.norm(torch.relu(self.w_1(x))))


class _Fsmn(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k_v = nn.Linear(dim, 2 * dim)
        self.linear_out = nn.Linear(dim, dim)


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, self_attn: bool, src_attn: bool):
        super().__init__()
        dim = cfg.width
        self.feed_forward = _DecoderFeedForward(dim, cfg.linear_units)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.self_attn = _Fsmn(dim, cfg.kernel_size) if self_attn else None
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if self_attn else None
        self.src_attn = _CrossAttention(dim, cfg.attention_heads) if src_attn else None
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if src_attn else None


class ParaformerDecoder(nn.Module):
    """The weights of ``ParaformerSANMDecoder`` (run by ``asr/decode.py``)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        if cfg.width % cfg.attention_heads:
            raise ParaformerFormatError(f"decoder width {cfg.width} is not divisible by {cfg.attention_heads} heads.")
        self.cfg = cfg
        self.embed = nn.Sequential(nn.Embedding(cfg.vocab_size, cfg.width))  # unused by inference, kept for strict load
        self.decoders = nn.ModuleList([_DecoderLayer(cfg, True, True) for _ in range(cfg.att_layer_num)])
        extra = cfg.num_blocks - cfg.att_layer_num
        self.decoders2 = nn.ModuleList([_DecoderLayer(cfg, True, False) for _ in range(extra)]) if extra > 0 else None
        self.decoders3 = nn.ModuleList([_DecoderLayer(cfg, False, False)])
        self.after_norm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.output_layer = nn.Linear(cfg.width, cfg.vocab_size)

    @property
    def streaming_layers(self) -> list[_DecoderLayer]:
        """Layers ``forward_chunk`` runs. FunASR's quirk: ``decoders2`` runs only when it has two or more layers."""
        layers = list(self.decoders)
        if self.decoders2 is not None and len(self.decoders2) > 1:
            layers += list(self.decoders2)
        return layers


def split_state(model_pt: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The ``prefix.*`` tensors of an official Paraformer ``model.pt`` (prefix removed)."""
    state = torch.load(str(model_pt), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    out = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith(prefix + "."):
            out[key[len(prefix) + 1 :]] = value
    if not out:
        raise ParaformerFormatError(
            f"{model_pt} has no {prefix}.* weights: this Paraformer cannot transcribe. "
            "Re-download Step-Audio-Tokenizer (the official model.pt holds encoder, predictor and decoder)."
        )
    return out


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, path: Path) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ParaformerFormatError(
            f"{path}: the {what} weights do not match config.yaml: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )


def randomize_(module: nn.Module, gen: torch.Generator, bias_std: float = 0.02, norm_std: float = 0.1) -> nn.Module:
    """Seeded random weights that keep activations O(1): LayerNorm 1+N/0+N, weights N(0, 1/fan_in)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if ".norm" in name or name.startswith("after_norm") or name.startswith("norm"):
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + norm_std * torch.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(bias_std * torch.randn(param.shape, generator=gen))
            else:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
    return module
