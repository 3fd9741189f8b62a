"""Token2Wav against the official ``token2wav_nonstream`` outputs of the parity fixture set.

How the reference fixed its noise (``reference/token2wav.json``):
* flow initial noise: the official ``rand_noise`` buffer was replaced by a seeded numpy draw; the slice
  actually used is stored as ``cfm_noise_used [80, T_mel]`` and passed in here;
* HiFT ``SineGen2``: the k-th random call returned ``default_rng(seed_k)`` arrays (``hift_rng_calls``).
  The ``randn_like`` call with ``nb_harmonics + 1`` columns is the additive source noise, rebuilt here
  from its seed; the initial phases (``rand``) do not reach the output (see ``decoder/hift.py``), and
  the last ``randn_like`` is unused by the official code. ``speech_zero_noise`` used zeros.

Tolerances from the parity README: mel 1e-4 (fp32), f0 2e-2 Hz, speech max 5e-3 / mean-abs 2e-4
(the phase is a float32 cumulative sum over tens of thousands of samples), prompt mel 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav, Token2WavInput

pytestmark = pytest.mark.parity

MEL_ATOL = 1e-4
F0_ATOL = 2e-2
SPEECH_MAX_ATOL = 5e-3
SPEECH_MEAN_ATOL = 2e-4


@pytest.fixture(scope="module")
def t2w(parity) -> Token2Wav:
    return Token2Wav.from_folder(parity.editx_dir / C.COSYVOICE_SUBDIR, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def ref(parity):
    return parity.npz("token2wav"), parity.json("token2wav")


def _item(z) -> Token2WavInput:
    return Token2WavInput(
        generated_ids=z["generated_ids_with_offsets"],
        prompt_ids=z["prompt_vq0206_with_offsets"],
        prompt_mel=torch.from_numpy(z["prompt_mel"]),
        speaker_embedding=torch.from_numpy(z["prompt_spk_embedding"]),
    )


def _sine_noise(t2w: Token2Wav, js: dict) -> np.ndarray:
    dim = t2w.config.hift.nb_harmonics + 1
    calls = [c for c in js["hift_rng_calls"] if c[0] == "randn_like" and c[1][-1] == dim]
    assert calls, "reference has no additive sine-noise draw"
    _, shape, seed = calls[0]
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def _maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def test_prompt_mel_24k_and_16k(t2w, ref):
    z, _ = ref
    mel = t2w.prompt_mel(torch.from_numpy(z["prompt_wav24k_peak06"]), C.OUTPUT_SAMPLE_RATE)
    assert mel.shape == z["prompt_mel"].shape
    assert _maxdiff(mel, z["prompt_mel"]) <= MEL_ATOL
    mel16 = t2w.prompt_mel(torch.from_numpy(z["prompt16k_wav"]), C.TOKENIZER_SAMPLE_RATE)
    assert mel16.shape == z["prompt16k_mel"].shape
    assert _maxdiff(mel16, z["prompt16k_mel"]) <= MEL_ATOL


def test_flow_inputs_match(t2w, ref):
    z, _ = ref
    for cast, feat_key in ((True, "flow_prompt_feat_interp"), (False, "flow_prompt_feat_interp_fp32_inputs")):
        prep = t2w.prepare([_item(z)], prompt_cast_bf16=cast)
        n_p, n_g = prep.prompt_frames[0], prep.generated_frames[0]
        frames = prep.frames[0].cpu().numpy()
        assert np.array_equal(frames[:n_p], z["flow_prompt_token_frames"])
        assert np.array_equal(frames[n_p:n_p + n_g], z["flow_token_frames"])
        feat = z[feat_key]
        assert _maxdiff(prep.cond[0, : feat.shape[0]], feat) == 0.0
        assert float(prep.cond[0, feat.shape[0]:].abs().max()) == 0.0
    prep = t2w.prepare([_item(z)])
    assert _maxdiff(prep.speaker[0], z["flow_embedding_in"]) == 0.0


def test_encoder_mean(t2w, ref):
    z, _ = ref
    prep = t2w.prepare([_item(z)])
    with torch.inference_mode():
        mu, _ = t2w.flow.encode(prep.frames, prep.token_padding)
    assert _maxdiff(mu[0], z["flow_encoder_proj_out"]) <= MEL_ATOL


def test_mel_out_with_reference_noise(t2w, ref):
    z, _ = ref
    noise = [torch.from_numpy(z["cfm_noise_used"])]
    mel = t2w.run_flow(t2w.prepare([_item(z)]), cfm_noise=noise)[0]
    assert mel.shape == z["mel_out"].shape
    assert _maxdiff(mel, z["mel_out"]) <= MEL_ATOL
    mel32 = t2w.run_flow(t2w.prepare([_item(z)], prompt_cast_bf16=False), cfm_noise=noise)[0]
    assert _maxdiff(mel32, z["mel_out_fp32_inputs"]) <= MEL_ATOL
    # the official bf16 cast is visible: without it the default path would miss the reference
    if _maxdiff(z["mel_out"], z["mel_out_fp32_inputs"]) > 10 * MEL_ATOL:
        assert _maxdiff(mel32, z["mel_out"]) > MEL_ATOL


def test_hift_f0_source_and_speech(t2w, ref):
    z, js = ref
    mel = torch.from_numpy(z["mel_out"])
    out = t2w.run_vocoder([mel], sine_noise=[torch.from_numpy(_sine_noise(t2w, js))])[0]
    # The stored f0 comes from the last HiFT run of the generator (in set A the fp32-inputs mel);
    # accept either mel as its source.
    f0_alt = t2w.run_vocoder([torch.from_numpy(z["mel_out_fp32_inputs"])],
                             sine_noise=[torch.zeros(out.waveform.numel(), t2w.config.hift.nb_harmonics + 1)])[0].f0
    assert min(_maxdiff(out.f0, z["hift_f0"]), _maxdiff(f0_alt, z["hift_f0"])) <= F0_ATOL
    for got, key in ((out.waveform, "speech_seeded"), (out.source, "source_seeded")):
        want = z[key]
        assert got.shape == want.shape
        diff = np.abs(got.numpy().astype(np.float64) - want)
        assert diff.max() <= SPEECH_MAX_ATOL and diff.mean() <= SPEECH_MEAN_ATOL, key
    assert float(out.waveform.abs().max()) <= float(np.float32(t2w.config.hift.audio_limit))


def test_speech_zero_noise_end_to_end(t2w, ref):
    z, _ = ref
    item = _item(z)
    n_sine = t2w.samples_per_group * -(-len(z["generated_ids_with_offsets"]) // C.TOKENS_PER_GROUP)
    out = t2w.decode([item], cfm_noise=[torch.from_numpy(z["cfm_noise_used"])],
                     sine_noise=[torch.zeros(n_sine, t2w.config.hift.nb_harmonics + 1)])[0]
    want = z["speech_zero_noise"]
    assert out.waveform.shape == want.shape == (n_sine,)
    diff = np.abs(out.waveform.numpy().astype(np.float64) - want)
    assert diff.max() <= SPEECH_MAX_ATOL and diff.mean() <= SPEECH_MEAN_ATOL
    assert _maxdiff(out.mel, z["mel_out"]) <= MEL_ATOL
