"""Prompt log-mel extractor: the flow's prompt condition (official ``frontend.extract_speech_feat``).

24 kHz audio -> reflect-pad ``(n_fft - hop) / 2`` on both sides -> STFT (``center=False``, periodic
Hann of ``win_size``) -> ``sqrt(|X|^2 + 1e-9)`` -> Slaney mel filterbank (librosa's default:
Slaney mel scale and area normalisation, ``fmin``..``fmax``) -> ``log(max(., 1e-5))``.
With the official ``mel_conf`` (n_fft 1920, hop 480, 80 mels, fmax 8000) that is 50 frames/s.
Audio at another rate is first resampled with ``torchaudio.functional.resample`` (as officially).

The filterbank is computed here in float64 the way librosa computes it (librosa is not a dependency).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from .config import MelConfig
from .errors import Token2WavInputError

MAGNITUDE_EPS = 1e-9
LOG_FLOOR = 1e-5

# Slaney mel scale (librosa htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_F_SP = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    freqs = np.asarray(freqs, dtype=np.float64)
    mels = freqs / _SLANEY_F_SP
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    log_t = freqs >= _SLANEY_MIN_LOG_HZ
    mels[log_t] = min_log_mel + np.log(freqs[log_t] / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freqs = _SLANEY_F_SP * mels
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    log_t = mels >= min_log_mel
    freqs[log_t] = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels[log_t] - min_log_mel))
    return freqs


@lru_cache(maxsize=4)
def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` float32, equal to ``librosa.filters.mel`` with its defaults."""
    fmax = float(sr) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


class PromptMelExtractor:
    """``__call__(wav, sample_rate)``: ``[N]`` or ``[1, N]`` -> ``[T, num_mels]``; ``[B, N]`` -> ``[B, T, num_mels]``."""

    def __init__(self, cfg: MelConfig):
        self.cfg = cfg
        self._basis: dict[str, torch.Tensor] = {}

    @property
    def sample_rate(self) -> int:
        return self.cfg.sampling_rate

    def _mel_basis(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._basis:
            c = self.cfg
            basis = slaney_mel_filterbank(c.sampling_rate, c.n_fft, c.num_mels, c.fmin, c.fmax)
            self._basis[key] = torch.from_numpy(basis).to(device)
            self._basis[key + "/win"] = torch.hann_window(c.win_size).to(device)
        return self._basis[key], self._basis[key + "/win"]

    def __call__(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor):
            wav = torch.as_tensor(np.asarray(wav))
        squeeze = wav.ndim == 1 or (wav.ndim == 2 and wav.shape[0] == 1)
        y = wav.reshape(1, -1) if squeeze else wav
        if y.ndim != 2:
            raise Token2WavInputError(f"prompt audio must be [N] or [B, N] samples, got shape {tuple(wav.shape)}.")
        y = y.float()
        if sample_rate != self.cfg.sampling_rate:
            y = torchaudio.functional.resample(y, orig_freq=int(sample_rate), new_freq=self.cfg.sampling_rate)
        c = self.cfg
        pad = int((c.n_fft - c.hop_size) / 2)
        if y.shape[-1] <= pad:
            raise Token2WavInputError(
                f"prompt audio is too short for the mel front end ({y.shape[-1]} samples at {c.sampling_rate} Hz); "
                "use at least a fraction of a second of speech."
            )
        basis, window = self._mel_basis(y.device)
        y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(y, c.n_fft, hop_length=c.hop_size, win_length=c.win_size, window=window, center=False,
                          normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        spec = torch.sqrt(spec.pow(2).sum(-1) + MAGNITUDE_EPS)
        mel = torch.log(torch.clamp(torch.matmul(basis, spec), min=LOG_FLOOR))  # [B, n_mels, T]
        mel = mel.transpose(1, 2)
        return mel[0] if squeeze else mel
