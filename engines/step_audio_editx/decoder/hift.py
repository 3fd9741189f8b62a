"""HiFT vocoder: 80-bin mel at 50 Hz -> waveform at 24 kHz (neural source filter + iSTFT head).

Pipeline of the official ``HiFTGenerator.inference`` (CosyVoice2 lineage, ``SourceModuleHnNSF2``):

1. F0 predictor (5 convs + ELU, linear, abs): mel -> f0 [Hz] per mel frame.
2. Sine source: harmonics ``k * f0`` (k = 1..nb_harmonics+1); the phase is the cumulative sum of
   ``(k f0 / sr) mod 1`` at the frame rate, linearly upsampled by ``S`` = samples per frame;
   ``sin(phase) * nsf_alpha`` on voiced samples (f0 > threshold) plus Gaussian noise of std
   ``nsf_sigma`` (voiced) or ``nsf_alpha / 3`` (unvoiced); merged by a linear layer + tanh.
3. STFT of the source (n_fft 16, hop 4) is fused into each upsampling stage of the conv stack.
4. ``conv_post`` gives log-magnitude and phase -> iSTFT -> clip to ``audio_limit``.

Randomness (documented because parity depends on it). The official ``SineGen2`` draws three things:
(a) ``torch.rand(B, H+1)`` initial phases, added to sample 0 only. The linear downsampling that
follows reads samples ``S*i + S/2 - 1`` and ``S*i + S/2`` of each frame, never sample 0, so these
phases have NO effect on the output (checked against the reference, which used non-zero phases);
we do not draw them. (b) ``randn_like`` additive noise ``[B, S*T, H+1]``: the only noise source;
the caller passes it in (``sine_noise``), drawn from a seeded generator or zeros. (c)
``SourceModuleHnNSF2`` draws ``randn_like(uv)`` that is never used; we skip it.

Because (a) is lost, the frame-rate values of the official upsampled-then-downsampled ``rad``
equal ``(k f0 / sr) mod 1`` exactly, so we never build the sample-rate ``rad`` tensor.

Precision: f0 predictor, sine source, STFT and iSTFT always run in float32 (the phase is a cumulative
sum over tens of thousands of samples); the conv stack runs in the module dtype.

Batching: rows are right-padded mel. Every conv input is zeroed past the row's valid length (the
official single-clip convs see zero padding there), the source STFT reflects at each row's own end,
the phase is edge-extended past each row's end before its linear upsampling, and the iSTFT window
envelope counts only the row's own frames, so each row equals a single-clip run. Parameter names
follow the official ``hift.pt`` keys (weight norm folded at load).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import HiFTConfig
from .errors import DecoderConfigError
from .snake import Snake

CONV_PRE_KERNEL = 7
CONV_POST_KERNEL = 7
F0_CONV_KERNEL = 3
F0_CONV_LAYERS = 5
POST_LRELU_SLOPE = 0.01  # the last leaky_relu uses the torch default slope, not lrelu_slope
MAGNITUDE_CLIP = 1e2
ENVELOPE_EPS = 1e-11  # torch.istft's window-envelope threshold


def get_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def periodic_hann(n: int) -> torch.Tensor:
    """``scipy.signal.get_window("hann", n, fftbins=True)`` as float32 (the official iSTFT window)."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1) + 0.5 * np.cos(0 * fac) + 0.5 * np.cos(fac)
    return torch.from_numpy(w[:n].astype(np.float32))


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


class ResBlock(nn.Module):
    """Snake -> dilated conv -> Snake -> conv, residual, once per dilation."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=get_padding(kernel, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=get_padding(kernel)) for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            xt = _masked(c1(a1(x)), mask)
            x = _masked(c2(a2(xt)), mask) + x
        return x


class ConvRNNF0Predictor(nn.Module):
    """mel ``[B, 80, T]`` -> f0 ``[B, T]`` (Hz, non-negative). Keys ``condnet.{0,2,4,6,8}``, ``classifier``."""

    def __init__(self, in_channels: int, cond_channels: int, num_class: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(F0_CONV_LAYERS):
            layers += [nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, F0_CONV_KERNEL,
                                 padding=F0_CONV_KERNEL // 2), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = mel
        for i in range(0, len(self.condnet), 2):
            x = self.condnet[i + 1](_masked(self.condnet[i](x), mask))
        return torch.abs(self.classifier(x.transpose(1, 2)).squeeze(-1))


class SineSource(nn.Module):
    """f0 per frame -> NSF excitation per sample (``SourceModuleHnNSF2`` + ``SineGen2``). Key ``l_linear``."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.sampling_rate = cfg.sampling_rate
        self.upsample = cfg.samples_per_frame
        self.sine_amp = cfg.nsf_alpha
        self.noise_std = cfg.nsf_sigma
        self.voiced_threshold = cfg.nsf_voiced_threshold
        self.dim = cfg.nb_harmonics + 1
        self.l_linear = nn.Linear(self.dim, 1)
        if self.upsample < 3:
            raise DecoderConfigError("hift: fewer than 3 samples per mel frame is not supported.")

    def forward(self, f0: torch.Tensor, lengths: Sequence[int], noise: torch.Tensor) -> torch.Tensor:
        """``f0 [B, T]`` float32, valid frames per row, ``noise [B, S*T, H+1]`` -> source ``[B, S*T]`` float32."""
        t = f0.shape[1]
        harmonics = torch.arange(1, self.dim + 1, dtype=f0.dtype, device=f0.device)
        rad = (f0[:, :, None] * harmonics) / self.sampling_rate % 1
        phase = torch.cumsum(rad, dim=1) * 2 * np.pi  # [B, T, H+1]
        if any(n != t for n in lengths):  # hold each row's last phase so the upsampling edge matches a lone run
            idx = torch.arange(t, device=f0.device)[None, :].minimum(
                torch.tensor([n - 1 for n in lengths], device=f0.device)[:, None])
            phase = phase.gather(1, idx[:, :, None].expand(-1, -1, self.dim))
        phase = F.interpolate(phase.transpose(1, 2) * self.upsample, scale_factor=float(self.upsample),
                              mode="linear").transpose(1, 2)
        sines = torch.sin(phase) * self.sine_amp
        uv = torch.repeat_interleave((f0 > self.voiced_threshold).to(f0.dtype), self.upsample, dim=1)[:, :, None]
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        waves = sines * uv + noise_amp * noise
        return torch.tanh(self.l_linear(waves)).squeeze(-1)


@dataclass
class HiFTOutput:
    speech: torch.Tensor  # [B, S*T] float32 (float64 for a float64 model), clipped; valid up to S * lengths[b]
    source: torch.Tensor  # [B, S*T] NSF excitation
    f0: torch.Tensor  # [B, T] Hz


class HiFTGenerator(nn.Module):
    """``forward(mel [B, 80, T], lengths, sine_noise [B, S*T, H+1])`` -> :class:`HiFTOutput`."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        base, n_fft = cfg.base_channels, cfg.istft_n_fft
        self.n_fft, self.hop = n_fft, cfg.istft_hop_len
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.m_source = SineSource(cfg)
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, CONV_PRE_KERNEL, padding=CONV_PRE_KERNEL // 2)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        down_rates = [1] + list(cfg.upsample_rates[::-1][:-1])
        cum = np.cumprod(down_rates)[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(cum, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)):
            ch, u = base // 2 ** (i + 1), int(u)
            self.source_downs.append(
                nn.Conv1d(n_fft + 2, ch, 1, 1) if u == 1 else nn.Conv1d(n_fft + 2, ch, u * 2, u, padding=u // 2)
            )
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        ch = base // 2 ** len(self.ups)
        self.conv_post = nn.Conv1d(ch, n_fft + 2, CONV_POST_KERNEL, padding=CONV_POST_KERNEL // 2)
        self.f0_predictor = ConvRNNF0Predictor(cfg.f0_predictor.in_channels, cfg.f0_predictor.cond_channels,
                                               cfg.f0_predictor.num_class)
        self.register_buffer("window", periodic_hann(n_fft), persistent=False)
        self.precise = torch.float32  # dtype of f0, source, STFT and iSTFT

    # -- dtype policy --------------------------------------------------------------------------
    def to_compute_dtype(self, dtype: torch.dtype) -> HiFTGenerator:
        """Conv stack in ``dtype``; f0 predictor, source and (i)STFT in float32 (float64 if ``dtype`` is)."""
        self.precise = torch.float64 if dtype == torch.float64 else torch.float32
        for part in (self.conv_pre, self.ups, self.source_downs, self.source_resblocks, self.resblocks, self.conv_post):
            part.to(dtype)
        for part in (self.f0_predictor, self.m_source):  # never rounded through ``dtype``
            part.to(self.precise)
        self.window = self.window.to(self.precise)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_pre.weight.dtype

    # -- lengths and masks ---------------------------------------------------------------------
    def level_lengths(self, frames: int) -> list[int]:
        """Valid length after each upsampling stage for ``frames`` mel frames (last one + reflection pad)."""
        out, n = [], frames
        for i, (u, k) in enumerate(zip(self.cfg.upsample_rates, self.cfg.upsample_kernel_sizes)):
            n = (n - 1) * u - 2 * ((k - u) // 2) + k
            out.append(n + 1 if i == len(self.ups) - 1 else n)
        return out

    @staticmethod
    def _mask(lengths: Sequence[int], size: int, like: torch.Tensor) -> torch.Tensor | None:
        if all(n == size for n in lengths):
            return None
        ar = torch.arange(size, device=like.device)[None, :]
        return (ar < torch.tensor(list(lengths), device=like.device)[:, None]).to(like.dtype)[:, None, :]

    # -- STFT helpers --------------------------------------------------------------------------
    def _source_stft(self, source: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        """``torch.stft(center=True, reflect)`` of each row's own samples -> ``[B, n_fft + 2, frames]``."""
        b, n = source.shape
        pad = self.n_fft // 2
        lens = torch.tensor(list(lengths), device=source.device)[:, None]
        ar = torch.arange(pad, device=source.device)[None, :]
        buf = source.new_zeros(b, n + 2 * pad)
        body = source if all(m == n for m in lengths) else source * (torch.arange(n, device=source.device) < lens)
        buf[:, pad:pad + n] = body
        buf[:, :pad] = source[:, 1:pad + 1].flip(1)
        buf.scatter_(1, pad + lens + ar, source.gather(1, lens - 2 - ar))
        spec = torch.stft(buf, self.n_fft, self.hop, self.n_fft, window=self.window, center=False, return_complex=True)
        spec = torch.cat([spec.real, spec.imag], dim=1)
        frames = [m // self.hop + 1 for m in lengths]
        return _masked(spec, self._mask(frames, spec.shape[-1], spec))

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor, frames: Sequence[int]) -> torch.Tensor:
        """``torch.istft(center=True)`` with a per-row window envelope -> ``[B, hop * (F - 1)]`` float32."""
        magnitude = torch.clip(magnitude, max=MAGNITUDE_CLIP)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        b, _, f = spec.shape
        seg = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[None, :, None]  # [B, n_fft, F]
        env = (self.window**2)[None, :, None].expand(b, -1, f)
        fmask = self._mask(frames, f, seg)
        if fmask is not None:
            seg, env = seg * fmask, env * fmask
        total = self.n_fft + self.hop * (f - 1)
        fold = lambda x: F.fold(x, (1, total), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0]
        y, env = fold(seg), fold(env)
        start = self.n_fft // 2
        y, env = y[:, start:total - start], env[:, start:total - start]
        return torch.where(env > ENVELOPE_EPS, y / env, torch.zeros_like(y))

    # -- forward -------------------------------------------------------------------------------
    def forward(self, mel: torch.Tensor, lengths: Sequence[int], sine_noise: torch.Tensor) -> HiFTOutput:
        """``mel [B, 80, T]``, valid frames per row, ``sine_noise [B, S*T, H+1]``."""
        cfg = self.cfg
        lengths = [int(n) for n in lengths]
        t = mel.shape[-1]
        mel32 = mel.to(self.precise)
        mask0 = self._mask(lengths, t, mel32)
        f0 = self.f0_predictor(_masked(mel32, mask0), mask0)
        source = self.m_source(f0, lengths, sine_noise.to(self.precise))
        sample_lengths = [n * cfg.samples_per_frame for n in lengths]
        s_stft = self._source_stft(source, sample_lengths).to(self.dtype)

        x = mel.to(self.dtype)
        mask = None if mask0 is None else mask0.to(self.dtype)
        x = _masked(self.conv_pre(_masked(x, mask)), mask)
        levels = [self.level_lengths(n) for n in lengths]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            mask = self._mask([lv[i] for lv in levels], x.shape[-1], x)
            x = _masked(x, mask)
            si = self.source_resblocks[i](_masked(self.source_downs[i](s_stft), mask), mask)
            x = x + si
            xs = None
            for j in range(self.num_kernels):
                r = self.resblocks[i * self.num_kernels + j](x, mask)
                xs = r if xs is None else xs + r
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x, POST_LRELU_SLOPE)).to(self.precise)
        half = self.n_fft // 2 + 1
        speech = self._istft(torch.exp(x[:, :half]), torch.sin(x[:, half:]), [lv[-1] for lv in levels])
        speech = torch.clamp(speech, -cfg.audio_limit, cfg.audio_limit)
        return HiFTOutput(speech=speech, source=source, f0=f0)
