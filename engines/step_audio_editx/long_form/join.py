"""Joining pieces of audio: equal-power crossfades between consecutive waveforms, fades around pauses."""

from __future__ import annotations

import math
from typing import Sequence

import torch

CROSSFADE_SECONDS = 0.03  # joins between consecutive pieces: short enough to keep words, long enough to hide clicks


def crossfade_join(pieces: Sequence[torch.Tensor | float], sample_rate: int,
                   crossfade_s: float = CROSSFADE_SECONDS) -> torch.Tensor:
    """Join waveforms (tensors) and pauses (seconds of silence, floats) into one [T] waveform.

    Consecutive waveforms overlap by ``crossfade_s`` with an equal-power fade. Around a pause the audio
    fades out / in over the same span, so no click remains.
    """
    fade = int(round(crossfade_s * sample_rate))
    parts: list[torch.Tensor] = []
    for k, piece in enumerate(pieces):
        if not isinstance(piece, torch.Tensor):
            parts.append(torch.zeros(int(round(float(piece) * sample_rate))))
            continue
        wav = piece.detach().to("cpu", torch.float32).reshape(-1).clone()
        n = min(fade, wav.shape[0])
        ramp = torch.sin(torch.linspace(0, math.pi / 2, n))
        after_pause = k > 0 and not isinstance(pieces[k - 1], torch.Tensor)
        before_pause = k + 1 < len(pieces) and not isinstance(pieces[k + 1], torch.Tensor)
        if after_pause:
            wav[:n] *= ramp
        if before_pause:
            wav[-n:] *= ramp.flip(0)
        if parts and k > 0 and isinstance(pieces[k - 1], torch.Tensor):
            m = min(n, parts[-1].shape[0])
            t = torch.linspace(0, math.pi / 2, m)
            overlap = parts[-1][-m:] * torch.cos(t) + wav[:m] * torch.sin(t)
            parts[-1] = parts[-1][:-m] if m else parts[-1]
            parts.append(overlap)
            wav = wav[m:]
        parts.append(wav)
    return torch.cat(parts) if parts else torch.zeros(0)
