"""The edit post-processor on a tiny random model: order of edits, batched model calls, long-form cloning."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.engine import StepAudioEditX
from comfyui_step_audio_editx.engines.step_audio_editx.types import GenerationSettings
from comfyui_step_audio_editx.utils.audio.edit_post_processor import (
    SEGMENT_CACHE,
    AudioSegment,
    apply_edit_tags,
    clone_long_form,
    crossfade_join,
)
from comfyui_step_audio_editx.utils.text.edit_tags import parse_edit_tags

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "example_workflows" / "sample_speech.wav"
FAST = GenerationSettings(dynamic_tokens=False, max_new_tokens=30)  # random weights rarely stop: keep passes short


class CountingEngine:
    """The real engine, with its model calls counted (a thin pass-through, not a mock)."""

    def __init__(self, engine: StepAudioEditX):
        self.engine, self.config = engine, engine.config
        self.calls: list[tuple[str, int]] = []

    def batch_edit(self, requests, settings, progress=None):
        self.calls.append(("batch_edit", len(requests)))
        return self.engine.batch_edit(requests, settings, progress)

    def edit(self, request, settings, progress=None):
        self.calls.append(("edit", 1))
        return self.engine.edit(request, settings, progress)

    def batch_clone(self, requests, settings, progress=None):
        self.calls.append(("batch_clone", len(requests)))
        return self.engine.batch_clone(requests, settings, progress)


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine


@pytest.fixture(scope="module")
def voice():
    data, sr = sf.read(SAMPLE, dtype="float32")
    return torch.from_numpy(data[: int(1.5 * sr)]), sr


def segments(voice, texts):
    wav, sr = voice
    out = []
    for i, text in enumerate(texts):
        clean, tags = parse_edit_tags(text)
        out.append(AudioSegment(wav[: int((1.0 + 0.2 * i) * sr)], sr, clean, tuple(tags), seed=40 + i))
    return out


def test_edits_apply_in_priority_order(engine, voice):
    counting = CountingEngine(engine)
    segs = segments(voice, ["We won <Laughter> the cup! <speed:faster> <emotion:happy> <style:shout>"])
    result = apply_edit_tags(counting, segs, FAST)
    assert result.applied[0] == ["emotion:happy", "style:shout", "speed:faster", "paralinguistic:laugh"]
    assert result.model_calls == 4 and len(counting.calls) == 4
    assert result.waveforms[0].shape[0] % C.SAMPLES_PER_GROUP == 0


def test_n_segments_with_k_steps_cost_k_batched_calls(engine, voice):
    texts = ["One <emotion:sad> <Sigh> more.", "Two <emotion:happy> <Laughter> more.", "Three <emotion:fear> <Uhm> more."]
    counting = CountingEngine(engine)
    batched = apply_edit_tags(counting, segments(voice, texts), FAST)
    assert batched.model_calls == 2 and counting.calls == [("batch_edit", 3), ("batch_edit", 3)]
    engine.clear_cache()
    sequential_engine = CountingEngine(engine)
    sequential = apply_edit_tags(sequential_engine, segments(voice, texts), FAST, batched=False)
    assert sequential.model_calls == 6 and len(sequential_engine.calls) == 6
    assert batched.applied == sequential.applied
    for b, s in zip(batched.passes, sequential.passes):
        assert b.tokens == s.tokens  # same seeds, same tokens


def test_segments_without_a_step_are_left_out_of_its_batch(engine, voice):
    counting = CountingEngine(engine)
    result = apply_edit_tags(counting, segments(voice, ["Plain <emotion:sad> text.", "Other <style:whisper> text.",
                                                          "Nothing here."]), FAST)
    assert counting.calls == [("batch_edit", 1), ("batch_edit", 1)]
    assert result.applied == [["emotion:sad"], ["style:whisper"], []]
    assert torch.equal(result.waveforms[2], segments(voice, ["x", "x", "x"])[2].waveform)


def test_long_form_clone_of_a_two_minute_text(engine, voice):
    sentence = ("The committee met again on Tuesday to review the budget, and after a long discussion "
                "they agreed to fund the new library wing. ")
    text = "<emotion:happy> " + sentence * 12 + "[pause:500ms] Thank you <Laughter> for listening."
    SEGMENT_CACHE.clear()
    counting = CountingEngine(engine)
    result = clone_long_form(counting, *voice, "I just heard the news.", text, FAST, seed=7)
    assert result.chunks >= 4
    assert counting.calls[0] == ("batch_clone", result.chunks)  # every chunk cloned in ONE batch
    # emotion applies to every chunk (one batched step), the laugh to the last chunk only (one more)
    assert [c for c, _ in counting.calls[1:]] == ["batch_edit", "batch_edit"]
    assert result.model_calls == 3
    # A cloned chunk is the pack's own output: however short random weights make it, it is edited (the
    # 0.5 s user-input minimum does not apply); only a chunk with no audio at all keeps its clone, and says so.
    for i, applied in enumerate(result.applied):
        if applied[:1] != ["emotion:happy"]:
            assert any(w.startswith(f"segment {i + 1}: emotion:happy skipped (audio is empty") for w in result.warnings)
    assert not any("at least 0.5 s" in w or "at most 30 s" in w for w in result.warnings)
    assert result.applied[-1] == ["emotion:happy", "paralinguistic:laugh"]
    assert result.sample_rate == C.OUTPUT_SAMPLE_RATE and result.waveform.dim() == 1
    again = CountingEngine(engine)
    cached = clone_long_form(again, *voice, "I just heard the news.", text, FAST, seed=7)
    assert again.calls == [] and cached.model_calls == 0 and torch.equal(cached.waveform, result.waveform)


def test_crossfade_join_lengths_and_pauses():
    sr = 1000
    a, b = torch.ones(500), torch.full((300,), 0.5)
    joined = crossfade_join([a, b, 0.25, a], sr, crossfade_s=0.02)
    assert joined.shape[0] == 500 + 300 - 20 + 250 + 500
    assert torch.all(joined[800 - 20:800 - 20 + 250] == 0)  # the pause is silence
    assert float(joined[0]) == 1.0 and float(joined[-1]) == 1.0
