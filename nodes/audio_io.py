"""ComfyUI AUDIO <-> engine tensors, at the node boundary.

ComfyUI's AUDIO is ``{"waveform": float32 [B, C, T] on the CPU, "sample_rate": int}``. A batch of clips
of different lengths can only be one tensor when the shorter ones are zero-padded at the end; the editor
trims that trailing padding again (``split_batch``) and says so in its info output. Our outputs are
24 kHz mono, ``[B, 1, T]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


class AudioInputError(ValueError):
    """An AUDIO value that is not ComfyUI's {"waveform": [B, C, T], "sample_rate": int}."""


@dataclass
class Clip:
    """One batch row: ``waveform`` [C, T] float32 on the CPU."""

    waveform: torch.Tensor
    sample_rate: int
    trimmed_samples: int = 0  # trailing zero padding removed from this row

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    @property
    def trimmed_s(self) -> float:
        return self.trimmed_samples / self.sample_rate


def check_audio(audio: object, name: str = "audio") -> tuple[torch.Tensor, int]:
    """The waveform as float32 [B, C, T] on the CPU and the sample rate, or AudioInputError saying what is wrong."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise AudioInputError(f"{name} is not a ComfyUI AUDIO value (a dict with 'waveform' and 'sample_rate').")
    waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 3:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise AudioInputError(f"{name}: expected a waveform tensor [batch, channels, samples], got {shape}.")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioInputError(f"{name}: the sample rate must be a positive integer, got {sample_rate!r}.")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0 or waveform.shape[2] == 0:
        raise AudioInputError(f"{name} is empty (waveform shape {tuple(waveform.shape)}).")
    return waveform.detach().to(device="cpu", dtype=torch.float32), int(sample_rate)


def trailing_padding(row: torch.Tensor) -> int:
    """Samples at the end of ``row`` [C, T] that are exactly zero in every channel (0 for an all-zero row)."""
    nonzero = (row != 0).any(dim=0).nonzero()
    return 0 if nonzero.numel() == 0 else row.shape[-1] - int(nonzero[-1]) - 1


def split_batch(audio: object, name: str = "audio") -> list[Clip]:
    """One Clip per batch row; rows of a batch (B > 1) lose their trailing zero padding."""
    waveform, sample_rate = check_audio(audio, name)
    if waveform.shape[0] == 1:
        return [Clip(waveform[0], sample_rate)]
    clips = []
    for row in waveform:
        pad = trailing_padding(row)
        clips.append(Clip(row[:, : row.shape[-1] - pad], sample_rate, pad))
    return clips


def to_comfy_audio(waveforms: Sequence[torch.Tensor], sample_rate: int) -> dict:
    """Mono clips [T] -> AUDIO [B, 1, T_max], shorter clips zero-padded at the end."""
    length = max(w.shape[-1] for w in waveforms)
    batch = torch.zeros(len(waveforms), 1, length, dtype=torch.float32)
    for i, w in enumerate(waveforms):
        batch[i, 0, : w.shape[-1]] = w.detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    return {"waveform": batch, "sample_rate": int(sample_rate)}


def merge_batches(first: object, second: object) -> dict:
    """Two AUDIO batches -> one mono batch at the higher of their sample rates, padded to the longest clip."""
    (wa, ra), (wb, rb) = check_audio(first, "audio_1"), check_audio(second, "audio_2")
    rate = max(ra, rb)
    rows = [_resample(row.mean(dim=0), r, rate) for batch, r in ((wa, ra), (wb, rb)) for row in batch]
    return to_comfy_audio(rows, rate)


def _resample(waveform: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    if rate == target:
        return waveform
    import torchaudio.functional  # only needed when the rates differ

    return torchaudio.functional.resample(waveform, rate, target)
