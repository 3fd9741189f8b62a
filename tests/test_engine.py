"""The engine end to end on a tiny random model (CPU): clone, every edit type, iterations, batches, errors."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig, StepAudioEditX
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.audio import AudioInputError
from comfyui_step_audio_editx.engines.step_audio_editx.model_files import ModelFilesError
from comfyui_step_audio_editx.engines.step_audio_editx.types import (
    CloneRequest,
    EditRequest,
    GenerationSettings,
    SamplingConfig,
    StopReason,
)
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import VocabularyError

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "example_workflows" / "sample_speech.wav"
TEXT = (REPO_ROOT / "example_workflows" / "sample_speech.txt").read_text(encoding="utf-8").strip()
GREEDY = GenerationSettings(sampling=SamplingConfig(temperature=0.0))
SAMPLED = GenerationSettings()


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine


@pytest.fixture(scope="module")
def clip():
    data, sr = sf.read(SAMPLE, dtype="float32")
    return torch.from_numpy(data), sr


def crop(clip, seconds: float):
    wav, sr = clip
    return wav[: int(seconds * sr)], sr


def check_audio(result):
    """24 kHz mono float32, 2,880 samples per generated 5-token group."""
    assert result.sample_rate == C.OUTPUT_SAMPLE_RATE
    assert result.waveform.dtype == torch.float32 and result.waveform.dim() == 1
    p = result.passes[-1]
    assert result.waveform.shape[0] == C.SAMPLES_PER_GROUP * math.ceil(p.n_generated_tokens / C.TOKENS_PER_GROUP)
    assert p.n_generated_tokens % C.TOKENS_PER_GROUP == 0 or p.stop_reason is StopReason.CAP
    assert 0 < p.n_generated_tokens <= p.max_new_tokens
    assert torch.isfinite(result.waveform).all() and float(result.waveform.abs().max()) <= 0.99 + 1e-6


def test_clone_speaks_in_groups(engine, clip):
    wav, sr = crop(clip, 2.0)
    result = engine.clone(CloneRequest(wav, sr, TEXT, "Good morning, everyone.", seed=5), SAMPLED)
    check_audio(result)
    assert result.passes[0].max_new_tokens >= 2 * C.AUDIO_TOKENS_PER_SECOND  # a short sentence still gets seconds
    assert all(C.VQ02_FIRST_ID <= t <= C.VQ06_LAST_ID for t in result.passes[0].tokens)


@pytest.mark.parametrize("edit_type,value,new_text", [
    ("emotion", "happy", None), ("emotion", "remove", None), ("style", "whisper", None), ("speed", "more faster", None),
    ("paralinguistic", None, "I just heard the news [Laughter], and honestly"), ("denoise", None, None),
    ("vad", None, None),
])
def test_every_edit_type(engine, clip, edit_type, value, new_text):
    wav, sr = crop(clip, 1.5)
    text = "" if edit_type in ("denoise", "vad") else "I just heard the news, and honestly"
    result = engine.edit(EditRequest(wav, sr, text, edit_type, value, new_text, seed=3), SAMPLED)
    check_audio(result)


def test_iterations_chain_and_lowering_the_count_is_free(engine, clip):
    wav, sr = crop(clip, 1.5)
    two = engine.edit(EditRequest(wav, sr, TEXT, "style", "whisper", n_iterations=2, seed=9), SAMPLED)
    assert len(two.passes) == 2
    check_audio(two)
    one = engine.edit(EditRequest(wav, sr, TEXT, "style", "whisper", n_iterations=1, seed=9), SAMPLED)
    assert one.passes[0] is two.passes[0]  # served from the per-iteration cache
    assert torch.equal(one.waveform, two.passes[0].waveform)
    # the second pass edits the first pass's 24 kHz output: its prompt holds that output's tokens
    assert two.passes[1].n_prompt_tokens != two.passes[0].n_prompt_tokens or two.passes[1].tokens != two.passes[0].tokens


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_batch_equals_sequential(engine, clip, settings):
    """What the README promises: the same tokens, and waveforms equal up to float rounding (the batched
    decoder's kernels sum in another order; measured <= 1.7e-7 here, one 16-bit step is 3.1e-5)."""
    settings = replace(settings, dynamic_tokens=False, max_new_tokens=60)  # a fixed cap keeps it fast
    lengths = (0.8, 1.3, 1.9, 2.6)
    requests = [EditRequest(*crop(clip, s), TEXT, "emotion", "sad", seed=100 + i) for i, s in enumerate(lengths)]
    engine.clear_cache()
    batched = engine.batch_edit(requests, settings)
    engine.clear_cache()
    alone = [engine.edit(r, settings) for r in requests]
    for b, a in zip(batched, alone):
        check_audio(b)
        assert b.passes[0].tokens == a.passes[0].tokens
        assert b.waveform.shape == a.waveform.shape
        assert float((b.waveform - a.waveform).abs().max()) < 1e-5


def test_seeds_decide_the_output(engine, clip):
    wav, sr = crop(clip, 1.2)
    engine.clear_cache()
    a = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=1), SAMPLED)
    engine.clear_cache()
    b = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=1), SAMPLED)
    c = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "fear", seed=2), SAMPLED)
    assert a.passes[0].tokens == b.passes[0].tokens and torch.equal(a.waveform, b.waveform)
    assert a.passes[0].tokens != c.passes[0].tokens


def test_fixed_cap_when_dynamic_tokens_is_off(engine, clip):
    wav, sr = crop(clip, 1.2)
    settings = GenerationSettings(dynamic_tokens=False, max_new_tokens=40)
    result = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "angry", seed=4), settings)
    assert result.passes[0].max_new_tokens == 40 and result.passes[0].n_generated_tokens <= 40
    if result.passes[0].n_generated_tokens == 40:
        assert result.truncated and result.stop_reason is StopReason.CAP


def test_progress_reports_every_token_and_can_stop(engine, clip):
    wav, sr = crop(clip, 1.2)
    seen = []

    def stop_after_ten(p):
        seen.append(p)
        return p.stage == "generate" and p.done >= 10

    engine.clear_cache()
    result = engine.edit(EditRequest(wav, sr, TEXT, "emotion", "sad", seed=8, n_iterations=2), SAMPLED,
                         progress=stop_after_ten)
    assert result.stop_reason is StopReason.INTERRUPTED and len(result.passes) == 1  # no pass on a cut output
    generate = [p for p in seen if p.stage == "generate"]
    assert [p.done for p in generate[:10]] == list(range(1, 11))


def test_progress_exception_propagates(engine, clip):
    class Cancelled(Exception):
        pass

    def cancel(p):
        raise Cancelled

    wav, sr = crop(clip, 1.1)
    engine.clear_cache()
    with pytest.raises(Cancelled):
        engine.edit(EditRequest(wav, sr, TEXT, "emotion", "sad", seed=12), SAMPLED, progress=cancel)


@pytest.mark.parametrize("request_kwargs,error,match", [
    (dict(edit_type="emotoin", edit_value="happy"), VocabularyError, "emotion"),
    (dict(edit_type="emotion", edit_value="hapy"), VocabularyError, "happy"),
    (dict(edit_type="style", edit_value="whisper", n_iterations=6), ValueError, "from 1 to 5"),
    (dict(edit_type="paralinguistic"), ValueError, "new_text"),
    (dict(edit_type="emotion", edit_value="happy", audio_text=" "), ValueError, "transcript"),
])
def test_bad_requests_fail_before_any_work(engine, clip, request_kwargs, error, match):
    wav, sr = crop(clip, 1.0)
    kwargs = dict(audio=wav, sample_rate=sr, audio_text=TEXT)
    kwargs.update(request_kwargs)
    good = EditRequest(wav, sr, TEXT, "emotion", "happy")
    with pytest.raises(error, match=match) as info:
        engine.batch_edit([good, EditRequest(**kwargs)], SAMPLED)
    assert "edit request 2 of 2" in str(info.value)


def test_bad_audio_is_a_clear_error(engine):
    with pytest.raises(AudioInputError, match="0.5"):
        engine.edit(EditRequest(torch.zeros(1000) + 0.1, 16000, TEXT, "emotion", "happy"))
    with pytest.raises(ValueError, match="empty"):
        engine.clone(CloneRequest(torch.randn(16000) * 0.1, 16000, TEXT, "  "))


def test_missing_model_files_are_listed(tmp_path):
    (tmp_path / "Step-Audio-EditX").mkdir()
    with pytest.raises(ModelFilesError) as info:
        StepAudioEditX(EngineConfig(search_roots=(str(tmp_path),), device="cpu")).load()
    message = str(info.value)
    for name in ("config.json", "tokenizer.model", "flow.pt", "linguistic_tokenizer.npy", "stepfun-ai/Step-Audio-EditX",
                 "stepfun-ai/Step-Audio-Tokenizer", "hf download"):
        assert name in message


def test_device_moves_keep_working(engine, clip):
    wav, sr = crop(clip, 1.0)
    engine.to("cpu")
    assert engine.loaded and engine.device.type == "cpu"
    assert set(engine.modules()) >= {"lm", "flow", "hift", "vq02_encoder", "vq06_tokenizer"}
    check_audio(engine.edit(EditRequest(wav, sr, TEXT, "emotion", "happy", seed=21), SAMPLED))


def test_cached_passes_belong_to_their_settings(engine, clip):
    wav, sr = crop(clip, 1.2)
    request = EditRequest(wav, sr, TEXT, "emotion", "excited", seed=31)
    engine.clear_cache()
    short = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=20))
    again = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=20))
    longer = engine.edit(request, GenerationSettings(dynamic_tokens=False, max_new_tokens=45))
    assert again.passes[0] is short.passes[0]  # same settings: served from the cache
    assert longer.passes[0] is not short.passes[0] and longer.passes[0].max_new_tokens == 45


def test_an_interrupted_pass_is_not_reused(engine, clip):
    wav, sr = crop(clip, 1.2)
    request = EditRequest(wav, sr, TEXT, "emotion", "sad", seed=33)
    engine.clear_cache()
    cut = engine.edit(request, SAMPLED, progress=lambda p: p.stage == "generate" and p.done >= 5)
    assert cut.stop_reason is StopReason.INTERRUPTED
    full = engine.edit(request, SAMPLED)
    assert full.stop_reason is not StopReason.INTERRUPTED and full.passes[0].n_generated_tokens > 5
