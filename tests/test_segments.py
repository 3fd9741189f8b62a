"""Long-form clone text: sentence chunks within ~30 s of audio, tags re-based, explicit pauses."""

from __future__ import annotations

import pytest
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.token_budget import estimate_clone_tokens, seconds_to_tokens
from comfyui_step_audio_editx.utils.text.edit_tags import EditTagError, parse_edit_tags
from comfyui_step_audio_editx.utils.text.segments import (
    Pause,
    SegmentError,
    TextChunk,
    segment_text,
    text_chunks,
)

RAINBOW = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. These take the shape of a long "
    "round arch, with its path high above, and its two ends apparently beyond the horizon. There is, "
    "according to legend, a boiling pot of gold at one end. People look, but no one ever finds it. When a "
    "man looks for something beyond his reach, his friends say he is looking for the pot of gold at the end "
    "of the rainbow."
)
# 3 x 98 + 6 = 300 words: two minutes at the average 150 words per minute.
TWO_MINUTES = " ".join([RAINBOW] * 3) + " And that is the whole story."
BUDGET = seconds_to_tokens(C.MAX_INPUT_SECONDS)  # 1250 tokens = 30 s


def check_chunks(chunks: list[TextChunk], budget: int = BUDGET) -> None:
    for chunk in chunks:
        assert chunk.max_new_tokens == estimate_clone_tokens(chunk.text) <= budget
        assert chunk.text == chunk.text.strip() and chunk.text
        for tag in chunk.tags:
            assert 0 <= tag.position <= len(chunk.text)


def test_two_minute_text_gives_several_chunks_within_the_limit():
    assert len(TWO_MINUTES.split()) == 300
    segments = segment_text(TWO_MINUTES)
    chunks = text_chunks(segments)
    assert len(chunks) == len(segments) >= 4
    check_chunks(chunks)
    assert " ".join(c.text for c in chunks) == TWO_MINUTES  # nothing lost, nothing added
    assert all(c.text.endswith(".") for c in chunks)  # cut at sentence ends
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_mandarin_long_text():
    sentence = "我觉得这个主意很好，我们明天就开始吧！"
    chunks = text_chunks(segment_text(sentence * 30))
    assert len(chunks) > 1
    check_chunks(chunks)
    assert "".join(c.text for c in chunks) == sentence * 30
    assert all(c.text.endswith("！") for c in chunks)


def test_short_text_is_one_chunk():
    segments = segment_text("  Hello there. <emotion:happy>  ")
    assert len(segments) == 1
    chunk = segments[0]
    assert chunk.text == "Hello there." and [(t.kind, t.value, t.position) for t in chunk.tags] == [("emotion", "happy", 12)]
    assert segment_text("") == [] and segment_text("  <denoise> ") == []


def test_paralinguistic_tags_follow_their_words():
    words = TWO_MINUTES.split()
    words.insert(150, "<Laughter:2>")  # in the middle of the text, before words[150]
    text = " ".join(words)
    target = TWO_MINUTES.split()[150]
    chunks = text_chunks(segment_text(text))
    check_chunks(chunks)
    owners = [c for c in chunks if c.tags]
    assert len(owners) == 1
    (tag,) = owners[0].tags
    assert (tag.kind, tag.value, tag.iterations) == ("paralinguistic", "laugh", 2)
    assert owners[0].text[tag.position:].startswith(target)


def test_tag_at_a_chunk_boundary_opens_the_later_chunk():
    chunks = text_chunks(segment_text(TWO_MINUTES))
    first = chunks[0].text
    text = first + " <Sigh> " + TWO_MINUTES[len(first) + 1:]
    moved = text_chunks(segment_text(text))
    assert [c.text for c in moved] == [c.text for c in chunks]
    assert moved[0].tags == () and [(t.value, t.position) for t in moved[1].tags] == [("sigh", 0)]
    # Right before a pause marker it closes the earlier chunk instead.
    text = first + " <Sigh> [pause:1s] " + TWO_MINUTES[len(first) + 1:]
    (chunk, pause, *_rest) = segment_text(text)
    assert [(t.value, t.position) for t in chunk.tags] == [("sigh", len(first))] and pause == Pause(1.0)


def test_whole_text_tags_reach_every_chunk_or_only_their_own():
    text = RAINBOW + " <emotion:sad> " + RAINBOW + " <style:whisper:2>"
    chunks = text_chunks(segment_text(text))
    assert len(chunks) >= 3
    for c in chunks:
        assert [(t.kind, t.value) for t in c.tags] == [("emotion", "sad"), ("style", "whisper")]
    local = text_chunks(segment_text(text, tag_scope="chunk"))
    owners = {t.kind: i for i, c in enumerate(local) for t in c.tags}
    assert local[owners["emotion"]].text.endswith("of the rainbow.")  # the sentence before the tag
    assert owners["style"] == len(local) - 1
    assert sum(len(c.tags) for c in local) == 2


def test_pauses_between_chunks():
    text = "[pause:250ms] First part. [pause:500ms] Second part. [pause:1.5s][pause:1s] Third. <Sigh> [wait:2]"
    segments = segment_text(text)
    kinds = [("pause", s.seconds) if isinstance(s, Pause) else ("text", s.text) for s in segments]
    assert kinds == [
        ("pause", 0.25), ("text", "First part."), ("pause", 0.5), ("text", "Second part."), ("pause", 2.5),
        ("text", "Third."), ("pause", 2.0),
    ]
    assert [(t.value, t.position) for t in segments[5].tags] == [("sigh", len("Third."))]


def test_bad_pause_and_tag_errors():
    with pytest.raises(SegmentError, match="pause"):
        segment_text("Hello [pause:soon] world")
    with pytest.raises(SegmentError):
        segment_text("Hello [pause:45s] world")
    with pytest.raises(EditTagError):
        segment_text("Hello <Laughtr> world")
    with pytest.raises(SegmentError):
        segment_text("Hello", tag_scope="sentence")
    with pytest.raises(SegmentError):
        segment_text("Hello", max_seconds=0.5)


def test_run_on_sentences_are_cut_at_clauses_then_words():
    run_on = ", ".join(["and then the little boat sailed on across the wide grey sea"] * 12) + "."
    chunks = text_chunks(segment_text(run_on))
    assert len(chunks) > 1
    check_chunks(chunks)
    assert all(c.text.endswith((",", ".")) for c in chunks)
    no_marks = " ".join(["word"] * 400)
    chunks = text_chunks(segment_text(no_marks))
    check_chunks(chunks)
    assert " ".join(c.text for c in chunks) == no_marks


def test_unbroken_cjk_is_cut_between_characters_but_never_inside_a_mark():
    text = ("啊" * 150 + "[Laughter]") * 4
    chunks = text_chunks(segment_text(text))
    assert len(chunks) > 1
    check_chunks(chunks)
    assert "".join(c.text for c in chunks) == text
    for c in chunks:
        assert c.text.count("[") == c.text.count("]")


def test_dialect_prefix_is_repeated_on_every_chunk():
    text = "[Sichuanese]" + "今天天气真不错，我们一起去公园散步吧！" * 30 + "<Laughter>"
    chunks = text_chunks(segment_text(text, max_seconds=15))
    assert len(chunks) > 2
    check_chunks(chunks, seconds_to_tokens(15))
    assert all(c.text.startswith("[Sichuanese]") for c in chunks)
    (tag,) = chunks[-1].tags
    assert tag.position == len(chunks[-1].text)
    body = "".join(c.text[len("[Sichuanese]"):] for c in chunks)
    assert body == parse_edit_tags(text)[0][len("[Sichuanese]"):]
