"""The trained edit vocabulary and the markup patterns shared by parser, segmenter and estimator."""

from __future__ import annotations

import pytest
from comfyui_step_audio_editx.engines.step_audio_editx import vocabulary as V


# The model cards, as published (the current one since 2026-01-29, the original of Nov 2025).
CARD_TAGS_2026 = (
    "sigh", "inhale", "laugh", "chuckle", "exhale", "clears throat", "snort", "giggle", "cough", "breath", "uhm",
    "Confirmation-en", "Surprise-oh", "Surprise-ah", "Surprise-wa", "Surprise-yo", "Dissatisfaction-hnn",
    "Question-ei", "Question-ah", "Question-en", "Question-yi", "Question-oh",
)
CARD_TAGS_2025 = ("Breathing", "Laughter", "Surprise-oh", "Confirmation-en", "Uhm", "Surprise-ah", "Surprise-wa",
                  "Sigh", "Question-ei", "Dissatisfaction-hnn")


def test_vocabulary_sizes_match_the_model_card():
    assert len(V.EMOTIONS) == 15 and len(set(V.EMOTIONS)) == 15
    assert len(V.STYLES) == 33 and len(set(V.STYLES)) == 33
    assert V.SPEEDS == ("faster", "slower", "more faster", "more slower")
    assert V.PARALINGUISTIC_TAGS == CARD_TAGS_2026
    assert V.PARALINGUISTIC_TAGS_ORIGINAL == CARD_TAGS_2025
    assert V.DIALECTS == ("Sichuanese", "Cantonese", "Japanese", "Korean")
    assert "remove" in V.EMOTIONS and "remove" in V.STYLES and "remove" not in V.SPEEDS


@pytest.mark.parametrize("spelling", ["more faster", "more_faster", "More-Faster", "  MORE   faster ", "more_Faster"])
def test_speed_spellings_normalise(spelling):
    assert V.normalize_speed(spelling) == "more faster"
    assert V.check_edit_value("speed", spelling) == "more faster"


def test_speed_remove_explains_the_official_behaviour():
    with pytest.raises(V.VocabularyError, match="emotion-remove instruction"):
        V.check_edit_value("speed", "remove")


def test_values_are_canonicalised_or_rejected_with_closest():
    assert V.check_edit_value("style", "Act-Coy") == "act_coy"
    assert V.check_edit_value("emotion", " HAPPY ") == "happy"
    assert V.check_edit_value("denoise", "anything") is None
    with pytest.raises(V.VocabularyError, match="Did you mean 'surprised'"):
        V.check_edit_value("emotion", "suprised")
    with pytest.raises(V.VocabularyError, match="Did you mean 'paralinguistic'"):
        V.check_edit_type("paralingustic")
    assert V.check_paralinguistic_tag("[laughter]") == "laugh"
    assert V.closest("zzzz", V.EMOTIONS) is None
    assert V.closest("sic", V.PARALINGUISTIC_TAGS) == "sigh"
    assert V.closest("sic", V.PARALINGUISTIC_TAGS, cutoff=0.8) is None


@pytest.mark.parametrize(
    "marker, seconds",
    [("[pause:500ms]", 0.5), ("[pause:1.5s]", 1.5), ("[pause:2]", 2.0), ("[Pause: 250 MS]", 0.25), ("[wait:.5]", 0.5),
     ("[stop:3s]", 3.0), ("1.5", 1.5)],
)
def test_pause_markers(marker, seconds):
    assert V.pause_seconds(marker) == pytest.approx(seconds)


@pytest.mark.parametrize("marker", ["[pause:abc]", "[pause:]", "[pause:-1s]", f"[pause:{V.MAX_PAUSE_SECONDS + 1}s]"])
def test_bad_pause_markers(marker):
    with pytest.raises(V.VocabularyError):
        V.pause_seconds(marker)


def test_markup_patterns():
    text = "[Sichuanese]Hi <Laughter:2|style:whisper> a [laughter] b [pause:1s] x<y>z <|BOT|>"
    assert [m.group(0) for m in V.INLINE_TAG_PATTERN.finditer(text)] == ["<Laughter:2|style:whisper>", "<y>"]
    assert V.PARALINGUISTIC_BRACKET_PATTERN.findall(text) == ["laughter"]
    assert V.DIALECT_PATTERN.match(text).group(1) == "Sichuanese"
    assert V.PAUSE_PATTERN.search(text).group(0) == "[pause:1s]"
    marks = "[chuckle] [Clears Throat] [clears_throat] [Question-yi] [question yo] [breath] [Breathing] [laughs]"
    assert V.PARALINGUISTIC_BRACKET_PATTERN.findall(marks) == [
        "chuckle", "Clears Throat", "clears_throat", "Question-yi", "breath", "Breathing"]


@pytest.mark.parametrize("tag", CARD_TAGS_2026)
def test_every_current_tag_is_accepted_in_any_case(tag):
    assert V.check_paralinguistic_tag(tag) == tag
    assert V.check_paralinguistic_tag(f"[{tag.upper()}]") == tag
    assert V.paralinguistic_tag_for_release(tag, V.WEIGHTS_RELEASE_CURRENT) == tag
    assert V.PARALINGUISTIC_BRACKET_PATTERN.fullmatch(f"[{tag}]")


@pytest.mark.parametrize("old, new", [("Laughter", "laugh"), ("Breathing", "breath"), ("Uhm", "uhm"), ("Sigh", "sigh"),
                                      ("Surprise-oh", "Surprise-oh"), ("Dissatisfaction-hnn", "Dissatisfaction-hnn")])
def test_original_spellings_are_aliases_and_round_trip(old, new):
    assert V.check_paralinguistic_tag(old) == new
    assert V.paralinguistic_tag_for_release(new, V.WEIGHTS_RELEASE_ORIGINAL) == old
    assert V.paralinguistic_tag_for_release(old, V.WEIGHTS_RELEASE_ORIGINAL) == old


def test_tags_the_original_weights_never_learnt_are_refused_for_them():
    new_only = set(CARD_TAGS_2026) - {V.check_paralinguistic_tag(t) for t in CARD_TAGS_2025}
    assert new_only == {"inhale", "chuckle", "exhale", "clears throat", "snort", "giggle", "cough", "Surprise-yo",
                        "Question-ah", "Question-en", "Question-yi", "Question-oh"}
    with pytest.raises(V.VocabularyError, match=r"2025-11 .* not trained on \[chuckle\].*'2026-01'"):
        V.paralinguistic_tag_for_release("chuckle", V.WEIGHTS_RELEASE_ORIGINAL)
    with pytest.raises(V.VocabularyError, match="Unknown weights release"):
        V.check_weights_release("2024")


def test_respelling_writes_what_each_release_learnt():
    text = "So [Laughter] funny [breathing] and [Clears_Throat] ok [sic]"
    assert V.respell_paralinguistic_marks(text) == "So [laugh] funny [breath] and [clears throat] ok [sic]"
    assert V.respell_paralinguistic_marks("a [laugh] b [uhm]", V.WEIGHTS_RELEASE_ORIGINAL) == "a [Laughter] b [Uhm]"
