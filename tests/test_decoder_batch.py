"""Batched decoding (right padding + masks) equals decoding clip by clip; attention backends agree.

In float64 the padded batch reproduces single-clip runs to rounding (~1e-12): that proves the masking
(look-ahead zeros, causal convs, key masks, per-row STFT reflection / phase edge / iSTFT envelope).
In float32 the vocoder's phase (a cumulative sum of f0) amplifies GEMM-shape rounding, so waveforms
are compared with the parity README's speech tolerance.
"""

from __future__ import annotations

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav, Token2WavInput
from decoder_cases import decoder_clips

pytestmark = pytest.mark.parity

SPEECH_MAX_ATOL = 5e-3
SPEECH_MEAN_ATOL = 2e-4
MEL_ATOL = 1e-4


@pytest.fixture(scope="module")
def folder(parity):
    return parity.editx_dir / C.COSYVOICE_SUBDIR


@pytest.fixture(scope="module")
def items(parity) -> list[Token2WavInput]:
    return decoder_clips(parity, (1000, 41, 23))


@pytest.fixture(scope="module")
def small_items(parity) -> list[Token2WavInput]:
    return decoder_clips(parity, (13, 9, 6))  # ragged tails of 3, 4 and 1 ids


def _gens():
    return [torch.Generator().manual_seed(s) for s in (11, 12, 13)]


def _compare(t2w: Token2Wav, items, mel_atol: float, wave_max: float, wave_mean: float) -> None:
    batch = t2w.decode(items, _gens())
    for item, gen, got in zip(items, _gens(), batch):
        alone = t2w.decode([item], [gen])[0]
        assert got.waveform.shape == alone.waveform.shape and got.mel.shape == alone.mel.shape
        assert float((got.mel - alone.mel).abs().max()) <= mel_atol
        diff = (got.waveform - alone.waveform).abs()
        assert float(diff.max()) <= wave_max and float(diff.mean()) <= wave_mean


def test_batch_equals_single_clips_float64(folder, small_items):
    t2w = Token2Wav.from_folder(folder, device="cpu", dtype=torch.float64)
    _compare(t2w, small_items, mel_atol=1e-9, wave_max=1e-8, wave_mean=1e-10)


def test_batch_equals_single_clips_float32(folder, items):
    t2w = Token2Wav.from_folder(folder, device="cpu", dtype="fp32")
    _compare(t2w, items, mel_atol=MEL_ATOL, wave_max=SPEECH_MAX_ATOL, wave_mean=SPEECH_MEAN_ATOL)


def test_eager_and_sdpa_agree(folder, small_items):
    """Conformer (relative-position bias) and DiT (key padding) attention: same mel on both backends
    (the vocoder has no attention)."""
    t2w = Token2Wav.from_folder(folder, device="cpu", dtype="fp32", attn_implementation="sdpa")
    assert t2w.dit_attn == "sdpa" and t2w.conformer_attn == "sdpa"
    prepared = t2w.prepare(small_items)
    mels = {}
    for attn in ("sdpa", "eager"):
        t2w.flow.decoder.estimator.set_attn_backend(attn)
        t2w.flow.encoder.set_attn_backend(attn)
        mels[attn] = t2w.run_flow(prepared, _gens())
    for a, b in zip(mels["sdpa"], mels["eager"]):
        assert float((a - b).abs().max()) <= MEL_ATOL
