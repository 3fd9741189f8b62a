"""Dynamic token caps, checked with real speech-rate figures (sources in token_budget's docstring)."""

from __future__ import annotations

import logging
import math

import pytest
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx import token_budget as B
from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import VocabularyError

# The Rainbow Passage (Fairbanks 1960), the standard read-speech passage of speech science: 98 words.
RAINBOW = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors. These take the shape of a long "
    "round arch, with its path high above, and its two ends apparently beyond the horizon. There is, "
    "according to legend, a boiling pot of gold at one end. People look, but no one ever finds it. When a "
    "man looks for something beyond his reach, his friends say he is looking for the pot of gold at the end "
    "of the rainbow."
)
AVERAGE_ENGLISH_WPM = 150  # NCVS average US English rate; audiobooks are read at 150-160 wpm
NEWS_MANDARIN_CHARS_PER_SECOND = 4.5  # China National Radio bulletins: 250-270 characters per minute
SEED_TOKENS_PER_CHAR = 0.6  # the seed's rule
ZH = (
    "中国的历史源远流长，从远古时代开始，这片土地上的人们就创造了灿烂的文化。"
    "他们发明了文字，修建了城市，发展了农业和手工业。"
    "今天，我们依然可以从博物馆里的文物中，感受到古人的智慧和勤劳。"
)


def tokens_for(seconds: float) -> float:
    return seconds * C.AUDIO_TOKENS_PER_SECOND


def test_30_second_english_passage():
    words = RAINBOW.split()
    assert len(words) == 98
    passage = " ".join(words[:75]) + "."  # 75 words = 30 s at 150 wpm
    reading = tokens_for(75 / AVERAGE_ENGLISH_WPM * 60)
    # the estimator's normal reading of the passage lands near the measured average (pauses included)
    assert reading <= B.normal_clone_tokens(passage) <= 1.25 * reading
    cap = B.estimate_clone_tokens(passage)
    assert reading <= cap <= 2 * reading
    # the cap lets a slow reader (110 wpm, the estimator's slow pace) finish the passage
    assert cap >= tokens_for(75 / 110 * 60) > SEED_TOKENS_PER_CHAR * len(passage)


def test_full_rainbow_passage_and_slow_reading():
    reading = tokens_for(98 / AVERAGE_ENGLISH_WPM * 60)  # 39.2 s
    slow = tokens_for(98 / B.ENGLISH_WORDS_PER_MINUTE_SLOW * 60)  # 53.5 s
    cap = B.estimate_clone_tokens(RAINBOW)
    assert slow <= cap <= 2 * reading


def test_mandarin_passage():
    counts = B.count_speech(ZH)
    assert counts.han_characters == 82 and counts.sentence_pauses == 3 and counts.clause_pauses == 6
    news = tokens_for(counts.han_characters / NEWS_MANDARIN_CHARS_PER_SECOND)
    cap = B.estimate_clone_tokens(ZH)
    assert news <= cap <= 2 * B.normal_clone_tokens(ZH)
    slow = tokens_for(counts.han_characters / B.MANDARIN_SYLLABLES_PER_SECOND_SLOW)
    assert cap >= slow


def test_japanese_morae_and_korean_syllables():
    assert B.count_speech("きょう").kana_morae == 2  # kyo-u: the small ょ joins the previous mora
    assert B.count_speech("がっこう").kana_morae == 4  # ga-k-ko-u: っ is a mora
    assert B.count_speech("コーヒー").kana_morae == 4  # ko-o-hi-i: ー is a mora
    ja = B.count_speech("今日は学校です。")
    assert ja.japanese and ja.han_characters == 4 and ja.kana_morae == 3  # 今日 学校 + は です
    # Kanji read in Japanese (~2 morae) take longer than the same characters read in Mandarin.
    assert B.speech_seconds("学校です") > B.speech_seconds("学校") + B.speech_seconds("です") - 1e-9
    assert B.speech_seconds("[Japanese]学校") > B.speech_seconds("学校")
    ko = B.count_speech("오늘 날씨가 정말 좋네요.")
    assert ko.hangul_syllables == 10 and ko.latin_words == 0
    assert B.estimate_clone_tokens("오늘 날씨가 정말 좋네요.") >= tokens_for(10 / B.KOREAN_SYLLABLES_PER_SECOND_SLOW)


def test_counting_details():
    c = B.count_speech("I can't pay 3.14 or 1,234 dollars, 50% off!")
    assert c.latin_words == 6  # I, can't, pay, or, dollars, off
    assert c.digits == 9 and c.symbols == 1
    assert c.clause_pauses == 1 and c.sentence_pauses == 1  # "3.14" and "1,234" are not pauses
    assert B.count_speech("Hello?!... World").sentence_pauses == 1  # one gap, strongest mark
    long_word = B.count_speech("internationalization")
    assert long_word.latin_words == pytest.approx(20 / B.LATIN_LETTERS_PER_LONG_WORD)


def test_tags_and_pauses_add_time():
    base = "I can't believe it, we won!"
    assert B.estimate_clone_tokens(base + " [Laughter]") > B.estimate_clone_tokens(base)
    with_pause = B.estimate_clone_tokens("First part. [pause:2s] Second part.")
    without = B.estimate_clone_tokens("First part. Second part.")
    assert with_pause - without >= math.floor(tokens_for(2.0 * B.CLONE_MARGIN)) - C.TOKENS_PER_GROUP
    # Inline edit tags and dialect prefixes are not spoken.
    assert B.estimate_clone_tokens(base + " <emotion:happy> <Laughter:2>") == B.estimate_clone_tokens(base)
    assert B.count_speech("[Sichuanese]你好").han_characters == 2


def test_monotonic_in_text_length():
    text = "Hello there, 你好！今日は。 오늘 3.5 km [Laughter] and more words… " + ZH[:30] + " " + RAINBOW[:200]
    previous = 0
    for end in range(len(text) + 1):
        cap = B.estimate_clone_tokens(text[:end])
        assert cap >= previous, (end, text[:end])
        previous = cap


@pytest.mark.parametrize("text", ["Hi.", RAINBOW, ZH, "今日はいい天気ですね。", "오늘 날씨가 좋네요.", "a [pause:3s] b", ""])
def test_never_below_a_normal_reading_and_whole_groups(text):
    cap = B.estimate_clone_tokens(text)
    assert cap % C.TOKENS_PER_GROUP == 0 and cap > 0
    assert cap >= B.normal_clone_tokens(text)
    assert cap >= tokens_for(B.speech_seconds(text, B.NORMAL_PACE))


def test_context_bound(caplog):
    long_text = " ".join([RAINBOW] * 5)
    assert B.estimate_clone_tokens(long_text) > 5000
    with caplog.at_level(logging.WARNING, logger=B.__name__):
        assert B.estimate_clone_tokens(long_text, max_tokens=3000) == 3000
    assert "truncated" in caplog.text
    assert B.estimate_clone_tokens("Hi.", max_tokens=3000) == B.estimate_clone_tokens("Hi.")
    with pytest.raises(B.TokenBudgetError):
        B.estimate_clone_tokens("Hi.", max_tokens=2)


def test_seconds_tokens_conversion():
    assert B.seconds_to_tokens(30.0) == 1250
    assert B.seconds_to_tokens(C.GROUP_SECONDS) == C.TOKENS_PER_GROUP
    assert B.seconds_to_tokens(C.GROUP_SECONDS * 1.01) == 2 * C.TOKENS_PER_GROUP
    assert B.seconds_to_tokens(0) == 0


def test_edit_caps_per_type():
    n = 1250  # a 30 s input
    caps = {
        key: B.estimate_edit_tokens(n, *key)
        for key in [("emotion", "sad"), ("style", "whisper"), ("speed", "faster"), ("speed", "more faster"),
                    ("speed", "slower"), ("speed", "more_slower"), ("denoise", None), ("vad", None)]
    }
    for key, cap in caps.items():
        assert cap % C.TOKENS_PER_GROUP == 0 and cap >= n, key
    assert caps[("speed", "slower")] >= 1.5 * n
    assert caps[("speed", "more_slower")] >= 2.0 * n > caps[("speed", "slower")]
    assert caps[("emotion", "sad")] > caps[("denoise", None)] == caps[("vad", None)] == caps[("speed", "faster")]
    # Every cap stays within a sensible multiple of the input (no runaway generations).
    assert max(caps.values()) <= 2.5 * n


def test_paralinguistic_caps_count_the_sounds():
    n = 500
    one = B.estimate_edit_tokens(n, "paralinguistic", text="Hello [Laughter] world")
    two = B.estimate_edit_tokens(n, "paralinguistic", text="Hello [Laughter] world [Sigh]")
    inline = B.estimate_edit_tokens(n, "paralinguistic", text="Hello <Laughter|style:whisper> world <Sigh:2>")
    assert n < one < two == inline
    assert two - one >= math.floor(tokens_for(B.PARALINGUISTIC_SOUND_SECONDS_SLOW)) - C.TOKENS_PER_GROUP
    assert B.estimate_edit_tokens(n, "paralinguistic") == one  # no text: one sound assumed


def test_edit_errors_and_bound():
    with pytest.raises(B.TokenBudgetError):
        B.estimate_edit_tokens(-5, "emotion", "happy")
    with pytest.raises(B.TokenBudgetError):
        B.estimate_edit_tokens(2.5, "emotion", "happy")
    with pytest.raises(VocabularyError, match="faster"):
        B.estimate_edit_tokens(100, "speed", "fastest")
    with pytest.raises(VocabularyError):
        B.estimate_edit_tokens(100, "speed")  # speed needs its value
    with pytest.raises(VocabularyError, match="emotion"):
        B.estimate_edit_tokens(100, "emotoin", "happy")
    assert B.estimate_edit_tokens(1250, "speed", "more slower", max_tokens=2000) == 2000


def test_every_tag_of_both_releases_counts_as_a_sound():
    """All 22 current tags and the original spellings add a sound, as [mark] or inline tag, in clone and edit caps."""
    from comfyui_step_audio_editx.engines.step_audio_editx.vocabulary import (
        PARALINGUISTIC_TAGS,
        PARALINGUISTIC_TAGS_ORIGINAL,
    )

    base = "We finally made it home after the long trip"
    names = PARALINGUISTIC_TAGS + PARALINGUISTIC_TAGS_ORIGINAL + ("clears_throat", "QUESTION-OH")
    assert len(names) == 34
    marks = " ".join(f"[{t}]" for t in names)
    assert B.count_speech(f"{base} {marks}").sounds == len(names)
    assert B.count_paralinguistic_sounds(f"{base} {marks}") == len(names)
    assert B.count_paralinguistic_sounds(base + " " + " ".join(f"<{t}>" for t in names)) == len(names)
    for name in names:
        assert B.estimate_clone_tokens(f"{base} [{name}]") > B.estimate_clone_tokens(base), name
    n = 500
    one = B.estimate_edit_tokens(n, "paralinguistic", text=f"{base} [chuckle]")
    three = B.estimate_edit_tokens(n, "paralinguistic", text=f"{base} [chuckle] [Question-yi] [clears throat]")
    assert three - one >= 2 * math.floor(tokens_for(B.PARALINGUISTIC_SOUND_SECONDS_SLOW)) - C.TOKENS_PER_GROUP
