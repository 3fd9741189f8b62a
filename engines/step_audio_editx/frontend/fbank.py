"""Kaldi filterbank features: the Paraformer WavFrontend (fbank -> LFR -> CMVN) and the CAM++ input.

Both use ``torchaudio.compliance.kaldi.fbank`` (the code the official path runs). The Paraformer front
end dithers as FunASR's WavFrontend(Online) does by default (dither 1.0, in int16 units): kaldi adds
``dither * N(0, 1)`` to every sample of every frame after framing, before DC removal and pre-emphasis,
fresh noise per frame. Without it, digital silence (our trim pads with it; DAW exports hold it) gives
log-mel values ~20 nats below anything the encoder saw in training. The noise here is drawn on the CPU
from a generator seeded by the clip's length (``dither_seed``), so a clip gives the same codes on every
run and device. CAM++ is dither 0 (the official ``extract_spk_embedding``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchaudio.compliance.kaldi as kaldi

from ..constants import HUB_REPO_TOKENIZER, KALDI_WAVE_SCALE, SPEAKER_FBANK_BINS, TOKENIZER_SAMPLE_RATE
from ..file_readers import read_model_text


FUNASR_DITHER = 1.0  # FunASR WavFrontend / WavFrontendOnline default (the official config.yaml sets none)
_SEED_BITS = 63
_DITHER_SEED_TAG = "vq02-dither"


@dataclass(frozen=True)
class FbankConfig:
    """The Paraformer ``frontend_conf`` (WavFrontendOnline) of the official ``config.yaml``."""

    sample_rate: int = TOKENIZER_SAMPLE_RATE
    window: str = "hamming"
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    lfr_m: int = 7
    lfr_n: int = 6
    dither: float = FUNASR_DITHER  # 0 turns it off (the parity fixtures were made that way)

    @classmethod
    def from_config(cls, frontend_conf: Mapping[str, Any]) -> FbankConfig:
        d = cls()
        return cls(
            sample_rate=int(frontend_conf.get("fs", d.sample_rate)),
            window=str(frontend_conf.get("window", d.window)),
            n_mels=int(frontend_conf.get("n_mels", d.n_mels)),
            frame_length_ms=float(frontend_conf.get("frame_length", d.frame_length_ms)),
            frame_shift_ms=float(frontend_conf.get("frame_shift", d.frame_shift_ms)),
            lfr_m=int(frontend_conf.get("lfr_m", d.lfr_m)),
            lfr_n=int(frontend_conf.get("lfr_n", d.lfr_n)),
            dither=float(frontend_conf.get("dither", d.dither)),
        )

    @property
    def frame_length_samples(self) -> int:
        return int(self.frame_length_ms * self.sample_rate / 1000)

    @property
    def frame_shift_samples(self) -> int:
        return int(self.frame_shift_ms * self.sample_rate / 1000)

    @property
    def feature_dim(self) -> int:
        """Width of one LFR frame (``n_mels * lfr_m``), the encoder input size."""
        return self.n_mels * self.lfr_m

    def num_fbank_frames(self, num_samples: int) -> int:
        """Frames kaldi's fbank gives for ``num_samples`` (``snip_edges=True``)."""
        if num_samples < self.frame_length_samples:
            return 0
        return (num_samples - self.frame_length_samples) // self.frame_shift_samples + 1


def load_cmvn(path: str | Path) -> torch.Tensor:
    """Read a Kaldi-nnet ``am.mvn`` (``<AddShift>`` / ``<Rescale>``) -> float32 ``[2, dim]`` (shift, scale)."""
    lines = read_model_text(path, HUB_REPO_TOKENIZER).splitlines()
    found: dict[str, list[float]] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()
        if not head or head[0] not in ("<AddShift>", "<Rescale>"):
            continue
        values = lines[i + 1].split()
        if values and values[0] == "<LearnRateCoef>":
            found[head[0]] = [float(v) for v in values[3:-1]]
    if "<AddShift>" not in found or "<Rescale>" not in found:
        raise ValueError(
            f"{path} is not a Kaldi-nnet CMVN file (needs <AddShift> and <Rescale> rows). Re-download am.mvn."
        )
    if len(found["<AddShift>"]) != len(found["<Rescale>"]):
        raise ValueError(f"{path}: <AddShift> and <Rescale> have different sizes. Re-download am.mvn.")
    return torch.tensor([found["<AddShift>"], found["<Rescale>"]], dtype=torch.float32)


def dither_seed(wav16k: torch.Tensor) -> int:
    """The clip's dither seed, from its length in samples (same clip, same noise, on any device).

    Not from the sample values: an edit pass feeds back decoder output whose last bits differ between a
    batch and a single call, or between CPU and GPU; noise keyed to exact values would turn that rounding
    into different codes. Sharing the noise pattern between clips of one length changes nothing else.
    """
    digest = hashlib.sha256(f"{_DITHER_SEED_TAG}|{int(wav16k.shape[-1])}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> (64 - _SEED_BITS)


def dither_noise(num_frames: int, frame_length: int, seed: int) -> torch.Tensor:
    """Standard normal noise ``[num_frames, frame_length]`` (float32, CPU), one row per kaldi frame."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn((num_frames, frame_length), generator=generator, dtype=torch.float32)


def paraformer_fbank(wav16k: torch.Tensor, config: FbankConfig, seed: int | None = None) -> torch.Tensor:
    """Mono ``[samples]`` in [-1, 1] -> ``[frames, n_mels]`` log-mel fbank of the int16-scaled wave.

    With ``config.dither`` the frames get kaldi's dither from ``dither_noise(..., seed)`` (seed default:
    ``dither_seed(wav16k)``): the dithered frames are laid end to end and fbank runs with the frame shift
    equal to the frame length, which frames them back exactly, so every later kaldi step is its own.
    """
    scaled = wav16k * KALDI_WAVE_SCALE
    frame_ms, shift_ms = config.frame_length_ms, config.frame_shift_ms
    length, shift = config.frame_length_samples, config.frame_shift_samples
    if config.dither and scaled.shape[0] >= length:
        frames = scaled.unfold(0, length, shift)
        noise = dither_noise(frames.shape[0], length, dither_seed(wav16k) if seed is None else seed)
        scaled = (frames + noise.to(frames.device) * config.dither).reshape(-1)
        shift_ms = frame_ms
    return kaldi.fbank(
        scaled.unsqueeze(0),
        num_mel_bins=config.n_mels,
        frame_length=frame_ms,
        frame_shift=shift_ms,
        dither=0.0,
        energy_floor=0.0,
        window_type=config.window,
        sample_frequency=config.sample_rate,
        snip_edges=True,
    )


def apply_lfr(feats: torch.Tensor, lfr_m: int, lfr_n: int) -> torch.Tensor:
    """Low frame rate stacking: ``[T, D]`` -> ``[ceil(T / lfr_n), lfr_m * D]``.

    Frame i stacks input frames ``i*lfr_n - (lfr_m-1)//2 ... + lfr_m - 1``, the first frame repeated on
    the left and the last frame repeated on the right (FunASR ``apply_lfr``), as one gather.
    """
    num_frames, dim = feats.shape
    left = (lfr_m - 1) // 2
    padded = torch.cat([feats[:1].expand(left, dim), feats], dim=0)
    out_frames = -(-num_frames // lfr_n)
    idx = torch.arange(out_frames, device=feats.device)[:, None] * lfr_n + torch.arange(lfr_m, device=feats.device)
    idx = idx.clamp_(max=padded.shape[0] - 1)
    return padded[idx].reshape(out_frames, lfr_m * dim)


def apply_cmvn(feats: torch.Tensor, cmvn: torch.Tensor) -> torch.Tensor:
    """``(feats + shift) * scale`` with ``cmvn = [shift; scale]`` of width ``feats.shape[-1]``."""
    dim = feats.shape[-1]
    return (feats + cmvn[0, :dim].to(feats.device)) * cmvn[1, :dim].to(feats.device)


class ParaformerFrontend:
    """The Paraformer WavFrontend: 16 kHz mono ``[samples]`` -> LFR + CMVN features ``[T_lfr, n_mels*lfr_m]``."""

    def __init__(self, config: FbankConfig, cmvn: torch.Tensor):
        if cmvn.shape[-1] < config.feature_dim:
            raise ValueError(
                f"am.mvn has {cmvn.shape[-1]} values per row but the front end makes {config.feature_dim}-d frames; "
                "config.yaml and am.mvn do not belong together."
            )
        self.config = config
        self.cmvn = cmvn.to(torch.float32)

    def __call__(self, wav16k: torch.Tensor) -> torch.Tensor:
        feats = paraformer_fbank(wav16k, self.config)
        feats = apply_lfr(feats, self.config.lfr_m, self.config.lfr_n)
        return apply_cmvn(feats, self.cmvn)


def speaker_fbank(wav16k: torch.Tensor, *, subtract_mean: bool = True) -> torch.Tensor:
    """CAM++ input: mono 16 kHz ``[samples]`` (NOT int16-scaled) -> ``[frames, 80]`` kaldi fbank, dither 0.

    With ``subtract_mean`` the time mean is removed, as the official ``extract_spk_embedding`` does.
    """
    feats = kaldi.fbank(
        wav16k.unsqueeze(0), num_mel_bins=SPEAKER_FBANK_BINS, dither=0.0, sample_frequency=TOKENIZER_SAMPLE_RATE
    )
    if subtract_mean:
        feats = feats - feats.mean(dim=0, keepdim=True)
    return feats
