"""Long-form edits and missing transcripts: segmentation rules, transcript alignment, joins, timestamps,
and a 75 s clip edited end to end on the tiny model with no transcript given."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import (
    MAX_INPUT_SECONDS,
    EditRequest,
    GenerationSettings,
)
from comfyui_step_audio_editx.engines.step_audio_editx.asr.text import Word
from comfyui_step_audio_editx.engines.step_audio_editx.asr.transcriber import token_spans
from comfyui_step_audio_editx.engines.step_audio_editx.long_form import crossfade_join, plan_pieces
from comfyui_step_audio_editx.engines.step_audio_editx.long_form.align import split_text
from comfyui_step_audio_editx.engines.step_audio_editx.long_form.segment import ENERGY_HOP_SECONDS

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "asr"))
from clips import make_clip  # noqa: E402

FAST = GenerationSettings(dynamic_tokens=False, max_new_tokens=50)  # 1.2 s per pass: structure, not quality


def _words(spec: list[tuple[float, float]]) -> list[Word]:
    return [Word(f"w{i}", a, b, i, i) for i, (a, b) in enumerate(spec)]


def _regular_words(duration: float, every: float = 0.4, length: float = 0.3) -> list[tuple[float, float]]:
    return [(t, t + length) for t in np.arange(0.0, duration - length, every)]


def _assert_valid(pieces, words, duration):
    assert pieces[0].start == 0 and pieces[-1].end == pytest.approx(duration)
    for a, b in zip(pieces[:-1], pieces[1:]):
        assert a.end == b.start and a.end_word == b.first_word
    for p in pieces:
        assert 0 < p.duration <= MAX_INPUT_SECONDS + 1e-9
        for w in words[p.first_word:p.end_word]:  # every word lies wholly inside its piece
            assert p.start <= w.start and w.end <= p.end


def test_cuts_fall_between_words_and_pieces_stay_within_30_s():
    duration = 125.0
    words = _words(_regular_words(duration))
    pieces = plan_pieces(words, duration, torch.ones(int(duration / ENERGY_HOP_SECONDS)))
    assert len(pieces) == 5
    _assert_valid(pieces, words, duration)


def test_pauses_are_preferred():
    spec = _regular_words(70.0)
    # one long pause at ~21 s: moving the words after it later by 0.8 s
    spec = [(a, b) if a < 21 else (a + 0.8, b + 0.8) for a, b in spec]
    words = _words(spec)
    energy = torch.ones(int(71 / ENERGY_HOP_SECONDS))
    quiet = int(21.3 / ENERGY_HOP_SECONDS)
    energy[quiet] = 0.0  # the quietest 10 ms of the pause
    pieces = plan_pieces(words, 70.8, energy)
    _assert_valid(pieces, words, 70.8)
    assert pieces[0].end == pytest.approx((quiet + 0.5) * ENERGY_HOP_SECONDS)  # in the pause, at its quietest point


def test_no_words_falls_back_to_the_quietest_point():
    energy = torch.ones(6000)
    energy[2500] = 0.0  # quietest at 25 s; the next window (from half the balanced target on) is flat: its start
    pieces = plan_pieces([], 60.0, energy)
    assert [round(p.end, 3) for p in pieces] == [25.005, 33.755, 60.0]
    assert all(p.duration <= MAX_INPUT_SECONDS for p in pieces)


def test_short_clips_are_one_piece():
    words = _words([(0.1, 0.4)])
    assert len(plan_pieces(words, 29.9, torch.ones(2990))) == 1


def test_typed_transcript_is_split_at_the_recognised_boundaries():
    recognised = ["hello", "there", "my", "frend", "how", "are", "you"]
    typed = "Hello there, my friend! How are you? [Laughter]"
    assert split_text(typed, recognised, [4]) == ["Hello there, my friend!", "How are you? [Laughter]"]
    assert split_text("你好世界。再见", ["你", "好", "世", "界", "再", "见"], [4]) == ["你好世界。", "再见"]
    assert split_text("a b c", ["x", "y", "z", "w"], [2]) == ["a b", "c"]  # nothing matches: proportional
    tags = split_text("ha [Laughter] ha ha", ["ha", "ha", "ha"], [1])
    assert tags == ["ha [Laughter]", "ha ha"]  # a tag stays with the words before it


def test_join_is_continuous_and_keeps_length():
    sr = 24_000
    a, b = torch.full((sr,), 0.5), torch.full((sr // 2,), 0.5)
    joined = crossfade_join([a, b], sr, crossfade_s=0.03)
    fade = int(0.03 * sr)
    assert joined.shape[0] == a.shape[0] + b.shape[0] - fade
    assert float((joined[1:] - joined[:-1]).abs().max()) < 0.5 * np.pi / 2 / fade * 1.01  # no step at the join
    assert float(joined.min()) >= 0.5 - 1e-6  # equal power: constant level never dips below the input


def test_token_spans_skip_silence_before_a_token():
    alpha = np.array([0.0, 0.0, 0.0, 0.5, 0.6, 0.0, 0.0, 0.4, 0.7], dtype=np.float32)
    spans = token_spans(np.array([4, 8]), alpha, 0.06, 1.0)
    assert spans == [(0.18, 0.3), (0.42, 0.54)]


def test_typed_transcript_wins(tiny_engine, monkeypatch):
    called = []
    monkeypatch.setattr(tiny_engine, "transcribe", lambda clips: called.append(clips) or [])
    wav = torch.from_numpy(make_clip(32_000, 3))
    res = tiny_engine.edit(EditRequest(wav, 16_000, "typed words", "emotion", "happy"), FAST)
    assert res.transcript == "typed words" and not res.transcribed and not called and not res.pieces


def test_75_s_clip_without_transcript_edits_end_to_end(tiny_engine, monkeypatch):
    wav = torch.from_numpy(make_clip(75 * 16_000, 11))
    batches = []
    inner = tiny_engine._edit_pieces
    monkeypatch.setattr(tiny_engine, "_edit_pieces", lambda reqs, s, p: batches.append(len(reqs)) or inner(reqs, s, p))
    res = tiny_engine.edit(EditRequest(wav, 16_000, None, "emotion", "sad", n_iterations=2, seed=3), FAST)
    words = tiny_engine.transcribe([(wav, 16_000)])[0].words
    assert res.transcribed and res.transcript
    assert len(res.pieces) >= 3 and batches == [len(res.pieces)]  # all pieces in one batch
    assert res.pieces[0].start_s == 0 and res.pieces[-1].end_s == pytest.approx(75.0)
    for p in res.pieces:
        assert p.end_s - p.start_s <= MAX_INPUT_SECONDS and p.text
    for cut in (p.start_s for p in res.pieces[1:]):
        assert not any(w.start < cut < w.end for w in words)  # never inside a word
    assert len(res.passes) == 2 * len(res.pieces) and res.waveform.shape[0] > 0
    again = tiny_engine.edit(EditRequest(wav, 16_000, None, "emotion", "sad", n_iterations=2, seed=3), FAST)
    assert torch.equal(again.waveform, res.waveform)  # seeded, and the finished passes are reused


def test_words_never_split_a_continued_piece():
    from comfyui_step_audio_editx.engines.step_audio_editx.asr.text import timed_words

    spans = [(0.0, 0.1), (0.1, 0.2), (0.3, 0.5), (0.6, 0.7)]
    words = timed_words(["un@@", "丄", "good", "是"], spans)
    assert [(w.text, w.start, w.end, w.first_token, w.last_token) for w in words] == [
        ("un丄good", 0.0, 0.5, 0, 2), ("是", 0.6, 0.7, 3, 3)]


def test_pieces_are_balanced_with_no_sliver_at_the_end():
    words = _words(_regular_words(300.0))
    pieces = plan_pieces(words, 300.0, torch.ones(30_000))
    _assert_valid(pieces, words, 300.0)
    assert len(pieces) == 11 and min(p.duration for p in pieces) > 25.0  # 300 s cannot be 10 cuts at exactly 30 s
