"""CAM++ speaker embedding parity (reference/spk_and_preprocess.*, token2wav.*) and batching behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx.constants import COSYVOICE_SUBDIR
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.audio import prepare_audio, resample
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.fbank import speaker_fbank
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.speaker import SpeakerEncoder

pytestmark = pytest.mark.parity

ATOL = 1e-4  # parity README: spk fbank and campplus embedding
# The fbank's float32 FFT rounds relative to a frame's loudest bins, so a bin far below them carries that
# error amplified in log space, and PyTorch's CPU FFT rounds differently per vector width: bins more than
# EXACT_RANGE_NATS under their frame's peak differed by 1.8e-4 on an AVX-512 CPU (below 1e-4 on AVX2), every
# other bin by at most 4e-5. Those quiet bins are held to the parity README's bound for an independent fbank.
EXACT_RANGE_NATS = 10.0
QUIET_BIN_ATOL = 1e-3


@pytest.fixture(scope="module")
def encoder(parity) -> SpeakerEncoder:
    return SpeakerEncoder.from_folder(parity.editx_dir / COSYVOICE_SUBDIR)


def _cases(parity) -> dict[str, int]:
    """Case name -> input rate, from ``spkXX_wav`` arrays (``spk16k``, ``spk24k``, ...)."""
    ref = parity.npz("spk_and_preprocess")
    names = [k[: -len("_wav")] for k in ref.files if k.startswith("spk") and k.endswith("_wav")]
    assert names, "no speaker cases in the fixture set"
    return {n: int(n[len("spk") : -1]) * 1000 for n in names}


def _wav16k(parity, name: str, sr: int) -> torch.Tensor:
    ref = parity.npz("spk_and_preprocess")
    wav = resample(torch.from_numpy(ref[f"{name}_wav"]), sr, 16000)
    if f"{name}_wav_resampled16k" in ref.files:
        np.testing.assert_allclose(wav.numpy(), ref[f"{name}_wav_resampled16k"], atol=1e-6, rtol=0, err_msg=name)
    return wav


def _assert_fbank_close(actual: np.ndarray, expected: np.ndarray, fbank: np.ndarray, name: str) -> None:
    """ATOL on every bin within EXACT_RANGE_NATS of its frame's peak (in the un-centred ``fbank``),
    QUIET_BIN_ATOL on the rest."""
    loud = fbank >= fbank.max(axis=1, keepdims=True) - EXACT_RANGE_NATS
    assert loud.mean() > 0.9, f"{name}: the fixture's frames should be mostly within {EXACT_RANGE_NATS} nats of peak"
    np.testing.assert_allclose(actual[loud], expected[loud], atol=ATOL, rtol=0, err_msg=f"{name}, loud bins")
    np.testing.assert_allclose(actual, expected, atol=QUIET_BIN_ATOL, rtol=0, err_msg=f"{name}, all bins")


def test_fbank_and_embedding_match_official(parity, encoder):
    ref = parity.npz("spk_and_preprocess")
    cases = _cases(parity)
    wavs = {n: _wav16k(parity, n, sr) for n, sr in cases.items()}
    for name, wav in wavs.items():
        expected = ref[f"{name}_fbank"]
        _assert_fbank_close(speaker_fbank(wav, subtract_mean=False).numpy(), expected, expected, name)
        _assert_fbank_close(encoder.features(wav).numpy(), expected - expected.mean(0, keepdims=True), expected, name)
    batch = encoder.embed(list(wavs.values()))
    assert batch.shape == (len(wavs), ref[f"{next(iter(cases))}_embedding"].shape[0]) and batch.dtype == torch.float32
    for row, name in zip(batch, wavs, strict=True):
        np.testing.assert_allclose(row.numpy(), ref[f"{name}_embedding"], atol=ATOL, rtol=0, err_msg=name)


def test_equal_length_clips_share_one_batch(parity, encoder):
    wav = _wav16k(parity, *next(iter(_cases(parity).items())))
    single = encoder.embed([wav])
    both = encoder.embed([wav, 0.5 * wav, wav[:-1600]])
    torch.testing.assert_close(both[0], single[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[2], encoder.embed([wav[:-1600]])[0], atol=1e-5, rtol=0)


def test_prompt_embedding_through_prepare_audio(parity, encoder):
    """tts.py path: 0.6 cap at 24 kHz, functional resample to 16 kHz, CAM++ (token2wav reference)."""
    ref = parity.npz("token2wav")
    prepared = prepare_audio(torch.from_numpy(ref["prompt_wav24k_raw"]), 24000)
    got = encoder.embed([prepared.wav16k])[0]
    np.testing.assert_allclose(got.numpy(), ref["prompt_spk_embedding"].reshape(-1), atol=ATOL, rtol=0)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="CosyVoice-300M-25Hz"):
        SpeakerEncoder.from_folder(tmp_path)
