"""Inline edit tags: every form, spelling normalisation, errors, positions, priority and rendering."""

from __future__ import annotations

import re

import pytest
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import (
    WEIGHTS_RELEASE_ORIGINAL,
    respell_paralinguistic_marks,
)
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import (
    EDIT_TYPES,
    INLINE_TAG_PATTERN,
    PARALINGUISTIC_TAGS,
)
from comfyui_step_audio_editx.utils.text.edit_tags import (
    EDIT_PRIORITY,
    EditTag,
    EditTagError,
    edit_priority,
    parse_edit_tags,
    plan_edit_steps,
    render_paralinguistic_text,
    sort_by_priority,
)


def kinds(tags):
    return [(t.kind, t.value, t.iterations, t.position) for t in tags]


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("<emotion:happy>", ("emotion", "happy", 1)),
        ("<emotion:Sad:3>", ("emotion", "sad", 3)),
        ("<style:whisper>", ("style", "whisper", 1)),
        ("<style:act-coy:2>", ("style", "act_coy", 2)),
        ("<style:remove>", ("style", "remove", 1)),
        ("<speed:faster>", ("speed", "faster", 1)),
        ("<speed:more faster>", ("speed", "more faster", 1)),
        ("<speed:more_faster:2>", ("speed", "more faster", 2)),
        ("<speed:More-Slower>", ("speed", "more slower", 1)),
        ("<denoise>", ("denoise", None, 1)),
        ("<vad:2>", ("vad", None, 2)),
        ("<Laughter>", ("paralinguistic", "laugh", 1)),
        ("<laughter:5>", ("paralinguistic", "laugh", 5)),
        ("<SURPRISE-OH>", ("paralinguistic", "Surprise-oh", 1)),
        ("<laugh>", ("paralinguistic", "laugh", 1)),
        ("<Breathing:2>", ("paralinguistic", "breath", 2)),
        ("<clears throat>", ("paralinguistic", "clears throat", 1)),
        ("<Clears_Throat:3>", ("paralinguistic", "clears throat", 3)),
        ("<question-yi>", ("paralinguistic", "Question-yi", 1)),
        ("<paralinguistic:chuckle>", ("paralinguistic", "chuckle", 1)),
        ("<paralinguistic:dissatisfaction-hnn:2>", ("paralinguistic", "Dissatisfaction-hnn", 2)),
        ("< emotion : happy : 2 >", ("emotion", "happy", 2)),
    ],
)
def test_every_tag_form(tag, expected):
    clean, tags = parse_edit_tags(f"Hello {tag} world")
    assert clean == "Hello world"
    assert [(t.kind, t.value, t.iterations) for t in tags] == [expected]
    assert tags[0].source == tag and tags[0].source_offset == 6 and tags[0].position == 6


@pytest.mark.parametrize("name", PARALINGUISTIC_TAGS)
def test_all_official_sounds(name):
    _, tags = parse_edit_tags(f"a <{name.lower()}> b")
    assert tags[0].value == name and tags[0].is_positional


def test_pipes_give_several_tags_at_one_place():
    clean, tags = parse_edit_tags("Hello <Laughter:2|style:whisper|emotion:happy> world")
    assert clean == "Hello world"
    assert kinds(tags) == [("paralinguistic", "laugh", 2, 6), ("style", "whisper", 1, 6), ("emotion", "happy", 1, 6)]
    assert {t.source for t in tags} == {"<Laughter:2|style:whisper|emotion:happy>"}


def test_issue_example():
    clean, tags = parse_edit_tags("I can't believe it <Laughter> we won! <emotion:excited> <speed:faster>")
    assert clean == "I can't believe it we won!"
    assert kinds(tags) == [("paralinguistic", "laugh", 1, 19), ("emotion", "excited", 1, 26), ("speed", "faster", 1, 26)]
    assert clean[19:].startswith("we won")


@pytest.mark.parametrize(
    "text, clean, positions",
    [
        ("   <Laughter> Hello world  ", "Hello world", [0]),  # leading tag and whitespace
        ("\n  Hello world <Sigh>\t ", "Hello world", [11]),  # trailing tag = end of text
        ("  Hello <Sigh> world", "Hello world", [6]),  # leading spaces shift positions
        ("<emotion:sad>Hello", "Hello", [0]),
        ("Hello<Laughter>", "Hello", [5]),
        ("Hello<Laughter>world", "Hello world", [6]),  # two words are not glued together
        ("a <Sigh><laughter:3> <Breathing> b", "a b", [2, 2, 2]),  # several in a row
        ("a  <Sigh>   b  c", "a b  c", [2]),  # only whitespace touching a tag is normalised
        ("That's funny <Laughter>, right?", "That's funny, right?", [12]),  # no space before punctuation
        ("He said (<Sigh> fine)", "He said (fine)", [9]),
        ("line one <emotion:sad>\n<Sigh> line two", "line one\nline two", [9, 9]),
        ("我觉得这个主意很好，<Laughter>我们明天就开始吧。", "我觉得这个主意很好，我们明天就开始吧。", [10]),
        ("我觉得 <Laughter> 很好", "我觉得 很好", [4]),
        ("  今日は<Sigh>いい天気<Laughter:2>ですね。<emotion:happy>", "今日はいい天気ですね。", [3, 7, 11]),
        ("오늘 <Laughter> 날씨가 좋네요", "오늘 날씨가 좋네요", [3]),
    ],
)
def test_positions(text, clean, positions):
    got, tags = parse_edit_tags(text)
    assert got == clean
    assert [t.position for t in tags] == positions
    for t in tags:
        assert 0 <= t.position <= len(got)
        assert text[t.source_offset:].startswith(t.source)


def test_tags_are_never_left_in_the_text():
    text = "<emotion:happy>Start <Laughter|style:whisper> mid<Sigh:2>dle <speed:more_faster> end <vad>"
    clean, tags = parse_edit_tags(text)
    assert not INLINE_TAG_PATTERN.search(clean) and "<" not in clean
    assert len(tags) == 6
    assert "  " not in clean


def test_square_brackets_and_other_markup_are_left_alone():
    clean, tags = parse_edit_tags("[Sichuanese]你好 [pause:1s] [laugh] <|BOT|>")
    assert clean == "[Sichuanese]你好 [pause:1s] [laugh] <|BOT|>" and tags == []


@pytest.mark.parametrize(
    "text, offset, suggestion, message",
    [
        ("x <Laughtr> y", 2, "<laugh>", "Did you mean <laugh>"),
        ("ok <emotion:fearful>", 3, "<emotion:fear>", "'fear'"),
        ("<style:whispr:2>", 0, "<style:whisper>", "'whisper'"),
        ("<speed:fastest>", 0, "<speed:faster>", "'faster'"),
        ("<speed:remove>", 0, None, "emotion 'remove'"),
        ("<happy>", 0, "<emotion:happy>", "<emotion:happy>"),
        ("<whisper>", 0, "<style:whisper>", "<style:whisper>"),
        ("<more_faster>", 0, "<speed:more faster>", "<speed:more faster>"),
        ("<emotoin:happy>", 0, "<emotion:VALUE>", "<emotion:VALUE>"),
        ("<denoice>", 0, "<denoise>", "<denoise>"),
        ("<paralinguistic:Laughs>", 0, "<laugh>", "<laugh>"),
        ("<Laughter:0>", 0, None, "1 to 5"),
        ("<Laughter:6>", 0, None, "1 to 5"),
        ("<Laughter:two>", 0, None, "whole number"),
        ("<emotion:happy:2:3>", 0, None, "Too many"),
        ("<emotion>", 0, None, "needs a value"),
        ("<emotion:>", 0, None, "needs a value"),
        ("abc <restore:2>", 4, None, "ChatterBox"),
        ("a<b>c", 1, None, "Unknown tag '<b>'"),
    ],
)
def test_errors_name_tag_position_and_closest(text, offset, suggestion, message):
    with pytest.raises(EditTagError) as info:
        parse_edit_tags(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.offset == offset and text[offset:].startswith(err.tag)
    assert err.suggestion == suggestion
    assert message in str(err) and f"character {offset}" in str(err)


def test_priority_order_and_steps():
    assert EDIT_PRIORITY == ("emotion", "style", "speed", "denoise", "vad", "paralinguistic")
    assert set(EDIT_PRIORITY) == set(EDIT_TYPES)
    assert [edit_priority(k) for k in EDIT_PRIORITY] == list(range(len(EDIT_PRIORITY)))
    with pytest.raises(EditTagError):
        edit_priority("pitch")
    _, tags = parse_edit_tags("<Laughter:2> a <vad> <speed:slower> b <Sigh> <emotion:sad> <denoise> <style:warm> <emotion:happy:3>")
    ordered = sort_by_priority(tags)
    assert [t.kind for t in ordered] == ["emotion", "emotion", "style", "speed", "denoise", "vad",
                                         "paralinguistic", "paralinguistic"]
    assert [t.value for t in ordered[:2]] == ["sad", "happy"]  # same kind: as written
    steps = plan_edit_steps(tags)
    assert [(s.kind, s.value, s.iterations) for s in steps] == [
        ("emotion", "sad", 1), ("emotion", "happy", 3), ("style", "warm", 1), ("speed", "slower", 1),
        ("denoise", None, 1), ("vad", None, 1), ("paralinguistic", None, 2),
    ]
    assert [t.value for t in steps[-1].tags] == ["laugh", "sigh"]  # all sounds in ONE call
    assert plan_edit_steps([]) == []


@pytest.mark.parametrize(
    "text, rendered",
    [
        ("Hello <Laughter> world", "Hello [laugh] world"),
        ("<Breathing> Hello world", "[breath] Hello world"),
        ("That's funny! <Laughter>", "That's funny! [laugh]"),
        ("That's funny <Laughter>, right?", "That's funny [laugh], right?"),
        ("a <Sigh><Laughter:3> b <emotion:sad>", "a [sigh] [laugh] b"),
        ("我觉得这个主意很好，<Laughter>我们明天就开始吧。", "我觉得这个主意很好，[laugh]我们明天就开始吧。"),
        ("<Uhm>今日はいい天気ですね。<Sigh>", "[uhm]今日はいい天気ですね。[sigh]"),
        ("No sounds here <emotion:happy>", "No sounds here"),
    ],
)
def test_render_official_transcript_form(text, rendered):
    clean, tags = parse_edit_tags(text)
    out = render_paralinguistic_text(clean, tags)
    assert out == rendered
    # Writing the marks back as inline tags and parsing again gives the same text and sound positions.
    again, tags_again = parse_edit_tags(re.sub(r"\[([A-Za-z-]+)\]", r"<\1>", out))
    assert again == clean
    sounds = [(t.value, t.position) for t in tags if t.is_positional]
    assert [(t.value, t.position) for t in tags_again] == sounds


def test_render_rejects_positions_outside_the_text():
    with pytest.raises(EditTagError):
        render_paralinguistic_text("abc", [EditTag("paralinguistic", "sigh", 1, 9)])


@pytest.mark.parity
def test_round_trip_with_the_official_paralinguistic_case(parity):
    case = parity.json("prompts_new")["cases"]["paralinguistic"]
    official_new_text, audio_text = case["text"], case["audio_text"]
    inline = re.sub(r"\[([A-Za-z-]+)\]", r"<\1>", official_new_text)
    clean, tags = parse_edit_tags(inline)
    assert clean == audio_text.strip()
    # rendered in the current spelling; written for the original weights it is the official text again
    rendered = render_paralinguistic_text(clean, tags)
    assert rendered == official_new_text.replace("[Laughter]", "[laugh]")
    assert respell_paralinguistic_marks(rendered, WEIGHTS_RELEASE_ORIGINAL) == official_new_text
