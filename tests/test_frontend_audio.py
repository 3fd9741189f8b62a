"""Audio preparation: official preprocess_wav parity, input validation, and rate/channel invariance.

Parity tests (marked ``parity``) read the fixture set at test time; the rest use synthetic audio and
tiny random tokenizers written in the official on-disk format.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio
import yaml

from comfyui_step_audio_editx.engines.step_audio_editx.constants import (
    MAX_INPUT_SAMPLE_RATE,
    MAX_INPUT_SECONDS,
    MIN_INPUT_SAMPLE_RATE,
    MIN_INPUT_SECONDS,
    PARAFORMER_SUBDIR,
    TRIM_ROUND_SAMPLES,
    VQ02_CENTROIDS_FILE,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.audio import (
    AudioInputError,
    cap_peak,
    energy_norm,
    librosa_trim_index,
    load_audio,
    prepare_audio,
    resample,
    to_mono,
    validate_audio,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.codes import interleave
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.fbank import FbankConfig, apply_lfr
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer import (
    SanmEncoderConfig,
    Vq02Tokenizer,
    random_sanm_encoder,
)
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer_stream import StreamingConfig, stream_layout
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.semantic import (
    Vq06Tokenizer,
    random_s3tokenizer,
    save_s3tokenizer,
    vq06_code_count,
)


def speech_like(seconds: float, sr: int, seed: int = 0, silence: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Harmonics below 3.5 kHz with a syllable envelope (band-limited, so 8 kHz keeps it), optional silence."""
    gen = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase + gen.uniform(0, 6)) / k for k in range(1, 20) if k * 180 < 3500)
    wav = wav * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2)
    wav = 0.3 * wav / np.abs(wav).max()
    lead, tail = (np.zeros(int(s * sr)) for s in silence)
    return torch.from_numpy(np.concatenate([lead, wav, tail]).astype(np.float32))


# --- parity with the official preprocess_wav ----------------------------------------------------


def _pre_cases(parity) -> list[str]:
    info = parity.json("spk_and_preprocess")
    return [k for k, v in info.items() if isinstance(v, dict) and "librosa_trim_index" in v]


@pytest.mark.parity
def test_preprocess_matches_official(parity):
    ref = parity.npz("spk_and_preprocess")
    info = parity.json("spk_and_preprocess")
    cases = _pre_cases(parity)
    assert cases, "fixture set has no preprocessing cases"
    for case in cases:
        meta = info[case]
        raw = torch.from_numpy(ref[f"{case}_input"])
        sr = int(meta["input_sr"])
        capped = cap_peak(raw)
        assert bool((capped != raw).any()) == bool(meta["peak06_applied"]), case
        resampled = resample(capped, sr, 16000, float64_kernel=True)
        np.testing.assert_allclose(resampled.numpy(), ref[f"{case}_resampled16k"], atol=1e-6, rtol=0, err_msg=case)

        prepared = prepare_audio(raw, sr)
        assert [prepared.trim.speech_start, prepared.trim.speech_end] == list(meta["librosa_trim_index"]), case
        assert prepared.tokenizer_wav.shape[0] == meta["output_len"], case
        np.testing.assert_allclose(
            prepared.tokenizer_wav.numpy(), ref[f"{case}_preprocessed16k"], atol=1e-6, rtol=0, err_msg=case
        )

        uncapped = prepare_audio(raw, sr, peak_cap=False)
        np.testing.assert_allclose(
            uncapped.tokenizer_wav.numpy(), ref[f"{case}_preprocessed16k_no_peak06"], atol=1e-6, rtol=0, err_msg=case
        )


@pytest.mark.parity
def test_peak_cap_and_speaker_resample_match_official(parity):
    ref = parity.npz("token2wav")
    prepared = prepare_audio(torch.from_numpy(ref["prompt_wav24k_raw"]), 24000)
    np.testing.assert_allclose(prepared.wav.numpy(), ref["prompt_wav24k_peak06"].reshape(-1), atol=1e-7, rtol=0)
    spk = parity.npz("spk_and_preprocess")
    got = resample(torch.from_numpy(spk["spk24k_wav"]), 24000, 16000)
    np.testing.assert_allclose(got.numpy(), spk["spk24k_wav_resampled16k"], atol=1e-6, rtol=0)


# --- official sample-wise steps on synthetic audio ------------------------------------------------


def test_cap_peak_and_energy_norm():
    wav = torch.tensor([0.0, 0.9, -0.3])
    assert torch.allclose(cap_peak(wav), wav / 0.9 * 0.6)
    quiet = torch.tensor([0.1, -0.2])
    assert torch.equal(cap_peak(quiet), quiet)
    assert math.isclose(float(energy_norm(quiet).abs().max()), 0.999, rel_tol=1e-6)
    tiny = torch.tensor([0.001, -0.002])  # below the 0.01 floor: scaled by 0.999 / 0.01, not to full scale
    assert torch.allclose(energy_norm(tiny), tiny / 0.01 * 0.999)


def test_trim_keeps_margins_and_rounds():
    wav = speech_like(1.0, 16000, silence=(0.5, 0.6))
    start, end = librosa_trim_index(wav.numpy())
    assert abs(start - 8000) <= 512 and abs(end - 24000) <= 512
    prepared = prepare_audio(wav, 16000)
    n = prepared.tokenizer_wav.shape[0]
    assert n == math.ceil((end - start) / TRIM_ROUND_SAMPLES) * TRIM_ROUND_SAMPLES + 4320
    expected_first = energy_norm(wav)[start - 800]
    assert torch.equal(prepared.tokenizer_wav[0], expected_first)


def test_trim_pads_when_speech_starts_at_zero():
    wav = speech_like(1.0, 16000)
    prepared = prepare_audio(wav, 16000)
    assert (prepared.trim.speech_start, prepared.trim.speech_end) == (0, 16000)
    out = prepared.tokenizer_wav
    assert out.shape[0] == 16080 + 4320  # ceil(16000 / 240) * 240 + 0.27 s
    assert bool((out[:800] == 0).all()) and bool((out[800 + 16000 :] == 0).all())
    torch.testing.assert_close(out[800 : 800 + 16000], energy_norm(wav), atol=0, rtol=0)


def test_load_audio_reads_channels_first(tmp_path):
    import soundfile as sf

    data = np.stack([np.linspace(-0.5, 0.5, 8000), np.zeros(8000)], axis=1).astype(np.float32)
    sf.write(tmp_path / "x.wav", data, 16000, subtype="FLOAT")
    wav, sr = load_audio(tmp_path / "x.wav")
    assert sr == 16000 and wav.shape == (2, 8000)
    np.testing.assert_array_equal(to_mono(wav).numpy(), data.mean(axis=1))
    with pytest.raises(AudioInputError, match="not found"):
        load_audio(tmp_path / "missing.wav")


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, sr, match",
    [
        (lambda: torch.zeros(0), 16000, "empty"),
        (lambda: torch.zeros(2, 0), 16000, "empty"),
        (lambda: speech_like(1.0, 7999), 7999, "sample rate"),
        (lambda: speech_like(0.6, 192001), 192001, "sample rate"),
        (lambda: speech_like(1.0, 16000), 0, "sample rate"),
        (lambda: speech_like(1.0, 16000), 16000.5, "sample rate"),
        (lambda: speech_like(1.0, 16000), float("nan"), "sample rate"),
        (lambda: speech_like(1.0, 16000), "16000", "sample rate"),
        (lambda: speech_like(MIN_INPUT_SECONDS - 0.01, 16000), 16000, "at least"),
        (lambda: speech_like(MAX_INPUT_SECONDS + 0.01, 16000), 16000, "at most"),
        (lambda: torch.where(torch.arange(16000) == 5, float("nan"), speech_like(1.0, 16000)), 16000, "NaN"),
        (lambda: torch.where(torch.arange(16000) == 5, float("inf"), speech_like(1.0, 16000)), 16000, "infinite"),
        (lambda: torch.zeros(16000), 16000, "silent"),
        (lambda: torch.full((16000,), 1e-6), 16000, "silent"),
        (lambda: torch.stack([speech_like(1.0, 16000), -speech_like(1.0, 16000)]), 16000, "silent"),
        (lambda: torch.zeros(1, 2, 16000), 16000, r"\[channels, samples\]"),
        (lambda: speech_like(1.0, 16000).reshape(-1, 2), 16000, r"\[samples, channels\]"),
        (lambda: torch.arange(16000), 16000, "floating point"),
        (lambda: [0.0] * 16000, 16000, "torch.Tensor or numpy"),
    ],
)
def test_bad_input_raises_clear_error(make, sr, match):
    with pytest.raises(AudioInputError, match=match) as info:
        prepare_audio(make(), sr)
    assert isinstance(info.value, ValueError)


def test_integral_float_rate_is_accepted():
    assert prepare_audio(speech_like(1.0, 16000), 16000.0).sample_rate == 16000


def test_limits_are_inclusive():
    validate_audio(speech_like(MAX_INPUT_SECONDS, 8000), 8000)
    validate_audio(speech_like(MIN_INPUT_SECONDS, MIN_INPUT_SAMPLE_RATE), MIN_INPUT_SAMPLE_RATE)
    validate_audio(speech_like(MIN_INPUT_SECONDS, MAX_INPUT_SAMPLE_RATE), MAX_INPUT_SAMPLE_RATE)


def test_int16_numpy_is_scaled():
    pcm = (speech_like(1.0, 16000).numpy() * 32768).astype(np.int16)
    mono = validate_audio(pcm, 16000)
    np.testing.assert_allclose(mono.numpy(), pcm / 32768.0, atol=1e-7)


# --- streaming layout and the LFR gather ---------------------------------------------------------


@pytest.mark.parametrize("num_samples", [8000, 11520, 12160, 12320, 12520, 40000, 480000])
def test_stream_layout_is_a_prefix_of_the_offline_frames(num_samples):
    fb, st = FbankConfig(), StreamingConfig()
    layout = stream_layout(num_samples, fb, st)
    offline = -(-fb.num_fbank_frames(num_samples) // fb.lfr_n)
    assert all(n == st.chunk_size[1] for n in layout.feat_lens[:-1])
    assert 1 <= layout.feat_lens[-1] <= st.chunk_size[1]
    assert offline - 1 <= layout.num_frames <= offline  # the official stream may drop a short tail frame
    assert layout.enc_lens == tuple(st.context_frames + n for n in layout.feat_lens)


def test_apply_lfr_matches_the_loop_definition():
    feats = torch.randn(23, 3)
    out = apply_lfr(feats, 7, 6)
    padded = torch.cat([feats[:1].repeat(3, 1), feats])
    for i in range(out.shape[0]):
        rows = [padded[min(i * 6 + k, padded.shape[0] - 1)] for k in range(7)]
        torch.testing.assert_close(out[i], torch.cat(rows), atol=0, rtol=0)


# --- tiny tokenizers in the official on-disk format ---------------------------------------------------


def write_tiny_tokenizer_folder(root, seed: int = 3) -> None:
    """A Step-Audio-Tokenizer folder with a random 2-block Paraformer (official file formats)."""
    fb = FbankConfig()
    cfg = SanmEncoderConfig(input_size=fb.feature_dim, output_size=32, attention_heads=2, linear_units=48, num_blocks=2)
    para = root / PARAFORMER_SUBDIR
    para.mkdir(parents=True)
    config = {
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {
            "output_size": 32,
            "attention_heads": 2,
            "linear_units": 48,
            "num_blocks": 2,
            "input_layer": "pe_online",
            "selfattention_layer_type": "sanm",
            "kernel_size": 11,
            "sanm_shfit": 0,
            "normalize_before": True,
        },
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
        },
    }
    (para / "config.yaml").write_text(yaml.safe_dump(config))
    gen = torch.Generator().manual_seed(seed)
    shift = (-12 + torch.randn(80, generator=gen)).repeat(7)
    scale = (0.2 + 0.05 * torch.rand(80, generator=gen)).repeat(7)

    def row(v: torch.Tensor) -> str:
        return "<LearnRateCoef> 0 [ " + " ".join(f"{x:.6f}" for x in v.tolist()) + " ]"

    (para / "am.mvn").write_text(
        f"<Nnet>\n<Splice> 560 560\n[ 0 ]\n<AddShift> 560 560\n{row(shift)}\n<Rescale> 560 560\n{row(scale)}\n</Nnet>\n"
    )
    state = {f"encoder.{k}": v for k, v in random_sanm_encoder(cfg, seed).state_dict().items()}
    state["decoder.embed.0.weight"] = torch.zeros(4, 4)  # other parts of the official checkpoint are ignored
    torch.save(state, para / "model.pt")
    # centroids = encoder frames of a synthetic clip, as k-means would place them
    np.save(root / VQ02_CENTROIDS_FILE, np.zeros((64, 32), np.float32))
    frames = Vq02Tokenizer.from_folder(root).encode_detailed([speech_like(4.0, 16000, seed=seed)])[0].enc_out
    pick = torch.randperm(frames.shape[0], generator=gen)[:64]
    np.save(root / VQ02_CENTROIDS_FILE, frames[pick].numpy())


@pytest.fixture(scope="module")
def tiny_tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer")
    write_tiny_tokenizer_folder(root)
    vq02 = Vq02Tokenizer.from_folder(root)
    s3_path = save_s3tokenizer(
        random_s3tokenizer(seed=5, n_audio_state=32, n_audio_head=2, n_audio_layer=1, n_codebook_size=64),
        root / "tiny.s3tokenizer.safetensors",
    )
    return vq02, Vq06Tokenizer.from_safetensors(s3_path)


def test_rates_and_channels_give_the_same_token_count(tiny_tokenizers):
    vq02, vq06 = tiny_tokenizers
    mono = speech_like(2.0, 16000, seed=1)
    variants = {
        "mono16k": (mono, 16000),
        "stereo16k": (torch.stack([mono, 0.5 * mono]), 16000),
        "stereo44k1": (torch.stack([torchaudio.functional.resample(mono, 16000, 44100)] * 2), 44100),
        "mono8k": (torchaudio.functional.resample(mono, 16000, 8000), 8000),
        "mono48k": (torchaudio.functional.resample(mono, 16000, 48000), 48000),
    }
    prepared = {k: prepare_audio(w, sr) for k, (w, sr) in variants.items()}
    wavs = [p.tokenizer_wav for p in prepared.values()]
    codes02, codes06 = vq02.encode(wavs), vq06.encode(wavs)
    counts = {
        k: (p.tokenizer_wav.shape[0], len(a), len(b), len(interleave(a.tolist(), b.tolist())))
        for (k, p), a, b in zip(prepared.items(), codes02, codes06, strict=True)
    }
    assert len(set(counts.values())) == 1, counts
    n16 = prepared["mono16k"].tokenizer_wav.shape[0]
    assert counts["mono16k"][1] == vq02.layout(n16).num_frames
    assert counts["mono16k"][2] == vq06_code_count(n16)
    assert prepared["mono8k"].wav16k.shape[0] == 32000 and prepared["mono8k"].wav24k.shape[0] == 48000


def test_vq02_batch_equals_single_clips(tiny_tokenizers):
    vq02, _ = tiny_tokenizers
    wavs = [speech_like(s, 16000, seed=i) for i, s in enumerate((0.6, 1.37, 2.0))]
    batched = vq02.encode_detailed(wavs)
    for wav, b in zip(wavs, batched, strict=True):
        single = vq02.encode_detailed([wav])[0]
        assert torch.equal(b.codes, single.codes)
        torch.testing.assert_close(b.enc_out, single.enc_out, atol=1e-5, rtol=0)
        assert b.codes.shape[0] == vq02.layout(wav.shape[0]).num_frames
    assert len({int(c) for r in batched for c in r.codes}) > 3  # random weights still give varied codes
