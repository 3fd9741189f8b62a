"""vq02 front-end dither: FunASR's 1.0, with noise seeded from the clip, exact against kaldi's own dither.

The reference is ``torchaudio.compliance.kaldi.fbank(wave * 32768, dither=1.0, ...)``, the call FunASR's
WavFrontend(Online) makes, with kaldi's ``torch.randn`` handed the same noise our front end draws: kaldi
adds it to each frame after framing and before DC removal / pre-emphasis, so both sides must agree exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from comfyui_step_audio_editx.engines.step_audio_editx.frontend import fbank as F
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer import Vq02Tokenizer

CONFIG = F.FbankConfig()
SILENT_LOG_MEL = float(np.log(np.finfo(np.float32).eps))  # kaldi's floor for an all-zero frame: ~-15.9


def _clip(seconds: float = 1.3, silence_s: float = 0.4, seed: int = 0) -> torch.Tensor:
    """Speech-like noise bursts with digital silence at both ends (as trim padding and DAW exports have)."""
    rng = np.random.default_rng(seed)
    n, pad = int(seconds * 16000), int(silence_s * 16000)
    wav = np.zeros(n, dtype=np.float32)
    t = np.arange(n - 2 * pad) / 16000
    wav[pad:n - pad] = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
                        + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)
    return torch.from_numpy(wav)


def _kaldi_with_noise(wav: torch.Tensor, noise: torch.Tensor, monkeypatch) -> torch.Tensor:
    """The official call, its dither drawn from ``noise`` instead of the global RNG."""
    real = torch.randn

    def randn(*shape, **kwargs):
        size = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, torch.Size)) else shape
        assert size == tuple(noise.shape), (size, noise.shape)
        return noise.to(kwargs.get("device") or "cpu", kwargs.get("dtype") or torch.float32).clone()

    monkeypatch.setattr(torch, "randn", randn)
    try:
        return kaldi.fbank((wav * 32768).unsqueeze(0), num_mel_bins=80, frame_length=25, frame_shift=10, dither=1.0,
                           energy_floor=0.0, window_type="hamming", sample_frequency=16000)
    finally:
        monkeypatch.setattr(torch, "randn", real)


def test_dither_is_fundasr_default_and_configurable():
    assert CONFIG.dither == 1.0
    assert F.FbankConfig.from_config({"fs": 16000}).dither == 1.0  # the official config.yaml sets none
    assert F.FbankConfig.from_config({"dither": 0.0}).dither == 0.0


def test_dithered_fbank_equals_kaldi_with_the_same_noise(monkeypatch):
    wav = _clip()
    frames = CONFIG.num_fbank_frames(wav.shape[0])
    noise = F.dither_noise(frames, CONFIG.frame_length_samples, F.dither_seed(wav))
    ours = F.paraformer_fbank(wav, CONFIG)
    reference = _kaldi_with_noise(wav, noise, monkeypatch)
    assert ours.shape == reference.shape == (frames, 80)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=0)
    # and it really is dithered: without noise the silent frames sit on kaldi's floor
    plain = F.paraformer_fbank(wav, dataclasses.replace(CONFIG, dither=0.0))
    assert float(plain[:20].max()) == pytest.approx(SILENT_LOG_MEL, abs=1e-3)
    assert float((ours[:20] - plain[:20]).mean()) > 15.0  # the ~20 nats the encoder never saw
    assert torch.allclose(ours[60:80], plain[60:80], atol=0.05)  # speech frames barely move


def test_dither_is_reproducible_and_immune_to_last_bit_rounding():
    """Same clip, same features. A fed-back pass whose samples differ in the last bits (a batched vs a single
    decode, CPU vs GPU) gets the same noise, so rounding cannot turn into other codes; other lengths get
    other noise."""
    a = _clip(seed=0)
    rounded = a + torch.where(torch.arange(a.shape[0]) % 7 == 0, 3e-7, 0.0)  # last-bit differences
    assert F.dither_seed(a) == F.dither_seed(a.clone()) == F.dither_seed(rounded)
    assert torch.equal(F.paraformer_fbank(a, CONFIG), F.paraformer_fbank(a.clone(), CONFIG))
    torch.testing.assert_close(F.paraformer_fbank(rounded, CONFIG), F.paraformer_fbank(a, CONFIG), atol=0.05, rtol=0)
    silent, longer = torch.zeros(8000), torch.zeros(8001)
    assert F.dither_seed(silent) != F.dither_seed(longer)
    assert not torch.equal(F.paraformer_fbank(silent, CONFIG)[:10], F.paraformer_fbank(longer, CONFIG)[:10])


def test_tokenizer_dithers_by_default_and_off_on_request(tiny_model_root):
    wav = _clip(seconds=2.0)
    on = Vq02Tokenizer.from_folder(tiny_model_root / "Step-Audio-Tokenizer")
    off = Vq02Tokenizer.from_folder(tiny_model_root / "Step-Audio-Tokenizer", dither=0.0)
    assert on.frontend.config.dither == 1.0 and off.frontend.config.dither == 0.0
    feats_on, feats_off = on.features(wav)[0], off.features(wav)[0]
    assert not torch.equal(feats_on, feats_off)
    assert torch.equal(on.features(wav)[0], feats_on)  # seeded from the clip: the same every call
    assert torch.equal(on.encode([wav])[0], on.encode([wav])[0])
