"""The CosyVoice S3 tokenizer v1 (vq06) in torch: whisper log-mel -> whisper-style encoder -> nearest code.

Our own implementation of the network the official ``speech_tokenizer_v1.onnx`` holds, so the pack does
not need the ``s3tokenizer`` package at run time (it pulls pre-commit, virtualenv and nodeenv into users'
environments). Parameter names follow that package's layout, so weights cached by earlier versions of
the pack load unchanged; ``tests/test_s3_model.py`` checks mel, codes and the ONNX conversion against it.

Network (inference only): two convolutions (kernel 3; strides 2, 2 for the 25 Hz model) with GELU over
the masked mel, a sinusoidal position table, pre-LayerNorm transformer blocks (key projection without
bias; queries and keys each scaled by head_dim^-1/4; padded keys masked), then every frame is
L2-normalised and mapped to the codebook entry at the smallest Euclidean distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import TOKENIZER_SAMPLE_RATE, VQ06_MEL_HOP, VQ06_MODEL_NAME, VQ06_V1_HEADS

S3_N_FFT = 400  # whisper STFT: 25 ms Hann window, 10 ms hop (VQ06_MEL_HOP)
S3_LOG_FLOOR = 1e-10  # power floor before log10
S3_DYNAMIC_RANGE = 8.0  # log10 units kept below the clip's loudest bin
S3_LOG_OFFSET = 4.0  # (log10 + 4) / 4 puts the features near [-1, 1]
S3_MASK_BIAS = -1.0e10  # added to attention scores of padded keys
CONV_KERNEL = 3
MLP_RATIO = 4
POSITION_MAX_TIMESCALE = 10_000
SLANEY_LINEAR_HZ_PER_MEL = 200.0 / 3  # Slaney mel scale: linear below 1 kHz ...
SLANEY_LOG_START_HZ = 1000.0
SLANEY_LOG_STEP = math.log(6.4) / 27.0  # ... logarithmic above it
CONV_STRIDES = {VQ06_MODEL_NAME: (2, 2), "speech_tokenizer_v1": (1, 2)}  # 25 Hz and 50 Hz variants


@dataclass
class S3Config:
    """Sizes of one S3 tokenizer (defaults: the official v1); ``use_sdpa`` picks the attention kernel only."""

    n_mels: int = 128
    n_audio_ctx: int = 1500
    n_audio_state: int = 1280
    n_audio_head: int = VQ06_V1_HEADS
    n_audio_layer: int = 6
    n_codebook_size: int = 4096
    use_sdpa: bool = False


# --- features ------------------------------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / SLANEY_LINEAR_HZ_PER_MEL
    log_start = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ_PER_MEL
    logarithmic = log_start + np.log(np.maximum(hz, SLANEY_LOG_START_HZ) / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_LOG_START_HZ, logarithmic, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_start = SLANEY_LOG_START_HZ / SLANEY_LINEAR_HZ_PER_MEL
    linear = mel * SLANEY_LINEAR_HZ_PER_MEL
    logarithmic = SLANEY_LOG_START_HZ * np.exp(SLANEY_LOG_STEP * (np.maximum(mel, log_start) - log_start))
    return np.where(mel >= log_start, logarithmic, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` triangular Slaney-normalised filters on the Slaney mel scale (float32),
    computed in float64 as librosa's ``filters.mel(sr=16000, n_fft=400, n_mels=n_mels)`` defines them."""
    bins = np.linspace(0.0, TOKENIZER_SAMPLE_RATE / 2, S3_N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(TOKENIZER_SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(edges)
    rising = (bins[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def log_mel_spectrogram(wav16k: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Whisper log-mel of a 16 kHz clip: ``[n_mels, samples // 160]`` (the last STFT frame is dropped)."""
    window = torch.hann_window(S3_N_FFT, device=wav16k.device)
    spectrum = torch.stft(wav16k, S3_N_FFT, VQ06_MEL_HOP, window=window, return_complex=True)
    power = spectrum[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).to(wav16k.device) @ power
    log_mel = torch.clamp(mel, min=S3_LOG_FLOOR).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - S3_DYNAMIC_RANGE)
    return (log_mel + S3_LOG_OFFSET) / S3_LOG_OFFSET


def pad_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_mels, T_i]`` pieces -> zero-padded ``[B, n_mels, T_max]`` and int32 lengths ``[B]``."""
    lengths = torch.tensor([m.shape[1] for m in mels], dtype=torch.int32)
    batch = mels[0].new_zeros(len(mels), mels[0].shape[0], int(lengths.max()))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    return batch, lengths


def _valid(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size]`` True where a frame is inside its clip."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


# --- network -------------------------------------------------------------------------------------------------

class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, use_sdpa: bool):
        super().__init__()
        self.heads, self.use_sdpa = heads, use_sdpa
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape
        scale = (width // self.heads) ** -0.25

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, T, W] -> [B, H, T, W/H]
            return t.view(batch, frames, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.query(x)) * scale, split(self.key(x)) * scale, split(self.value(x))
        if self.use_sdpa:
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        else:
            weights = torch.softmax((q @ k.transpose(-1, -2) + bias).float(), dim=-1).to(q.dtype)
            mixed = weights @ v
        return self.out(mixed.transpose(1, 2).reshape(batch, frames, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, use_sdpa: bool):
        super().__init__()
        self.attn = _Attention(width, heads, use_sdpa)
        self.attn_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width * MLP_RATIO), nn.GELU(), nn.Linear(width * MLP_RATIO, width))
        self.mlp_ln = nn.LayerNorm(width)

    @staticmethod
    def _norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:  # LayerNorm in float32 whatever x's dtype
        return F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), ln.bias.float(), ln.eps).to(x.dtype)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self._norm(self.attn_ln, x), bias)
        return x + self.mlp(self._norm(self.mlp_ln, x))


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    rates = torch.exp(-math.log(POSITION_MAX_TIMESCALE) / (channels // 2 - 1) * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Encoder(nn.Module):
    def __init__(self, config: S3Config, strides: tuple[int, int]):
        super().__init__()
        width = config.n_audio_state
        self.strides = strides
        self.conv1 = nn.Conv1d(config.n_mels, width, CONV_KERNEL, stride=strides[0], padding=1)
        self.conv2 = nn.Conv1d(width, width, CONV_KERNEL, stride=strides[1], padding=1)
        self.register_buffer("positional_embedding", _sinusoids(config.n_audio_ctx, width))
        self.blocks = nn.ModuleList(_Block(width, config.n_audio_head, config.use_sdpa)
                                    for _ in range(config.n_audio_layer))

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = mel
        for conv, stride in ((self.conv1, self.strides[0]), (self.conv2, self.strides[1])):
            x = F.gelu(conv(x * _valid(lengths, x.shape[-1])[:, None, :].to(x.dtype)))
            lengths = (lengths - 1) // stride + 1  # kernel 3, padding 1
        x = x.transpose(1, 2)
        bias = (~_valid(lengths, x.shape[1])).to(x.dtype)[:, None, None, :] * S3_MASK_BIAS
        x = (x + self.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return x, lengths


class _Codebook(nn.Module):
    def __init__(self, width: int, size: int):
        super().__init__()
        self.register_buffer("embed", torch.zeros(size, width))


class _Quantizer(nn.Module):
    def __init__(self, width: int, size: int):
        super().__init__()
        self._codebook = _Codebook(width, size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry (Euclidean) of every L2-normalised frame: ``[B, T]``."""
        x = F.normalize(hidden.float(), p=2, dim=-1).reshape(-1, hidden.shape[-1])
        embed = self._codebook.embed.t().to(x.dtype)
        distance = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True)
        return (-distance).max(dim=-1).indices.view(hidden.shape[:-1])


class S3Tokenizer(nn.Module):
    """mel ``[B, n_mels, T]`` + lengths -> codes ``[B, T']`` + code lengths (pieces of at most 30 s)."""

    def __init__(self, name: str = VQ06_MODEL_NAME, config: S3Config | None = None):
        super().__init__()
        if name not in CONV_STRIDES:
            raise ValueError(f"unsupported S3 tokenizer {name!r}; Step-Audio-EditX uses {VQ06_MODEL_NAME!r}.")
        self.name = name
        self.config = config or S3Config()
        self.encoder = _Encoder(self.config, CONV_STRIDES[name])
        self.quantizer = _Quantizer(self.config.n_audio_state, self.config.n_codebook_size)

    @torch.inference_mode()
    def quantize(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, code_lengths = self.encoder(mel, lengths)
        return self.quantizer(hidden), code_lengths
