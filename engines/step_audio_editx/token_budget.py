"""Dynamic caps on new tokens: how much audio a clone or an edit can need, from text and input length.

The language model emits ``AUDIO_TOKENS_PER_SECOND`` (41.67) audio ids per second of speech, in groups
of 5 (120 ms). The seed capped generation at 0.6 tokens per character of text, which is 70x too little
(an English character lasts ~70 ms, i.e. ~3 tokens) and truncates nearly every sentence. Here:

* **clone**: seconds of speech for the text read by a SLOW speaker (per-script rates below), plus
  explicit ``[pause:..]`` markers, ``[laugh]``-style sounds and punctuation pauses, times
  ``CLONE_MARGIN`` plus ``CLONE_EXTRA_SECONDS`` of leading/trailing silence, rounded up to whole
  5-token groups. Never below what a NORMAL-pace reading needs.
* **edit**: the input's own token count scaled per edit type (speed changes, added sounds, slower
  expressive readings), times ``EDIT_MARGIN`` plus ``EDIT_EXTRA_SECONDS``, rounded up to groups.

Both take ``max_tokens=`` (the room left in the model context); the cap never exceeds it.

Speaking-rate sources (numbers are the rates of the text units counted below):

* English, words per minute: ~150 wpm is the average US conversational rate (National Center for
  Voice and Speech); audiobook / radio readers are asked for 150-160 wpm; "slow speech is usually
  regarded as less than 110 wpm" (write-out-loud.com, "Speech rate"; Lucas, *The Art of Public
  Speaking*, 2004: US speakers 125-150 wpm, F. D. Roosevelt ~110 wpm).
* Mandarin, syllables (= characters) per second: China National Radio's news bulletins ran at
  185 characters/min in the 1960s and 250-270 characters/min recently (4.2-4.5 /s); read speech with
  pauses removed is 5.18 syllables/s (Pellegrino, Coupé & Marsico 2011, *Language* 87(3):539-558);
  the Mandarin Speech Perception test records sentences at 2.48 (slow), 3.74 (normal) and 5.67 (fast)
  words/s (PMC4959306, Table 2).
* Japanese, morae per second: 7.84 syllables (morae) per second in read speech with pauses removed,
  the fastest of the seven languages (Pellegrino et al. 2011); Coupé et al. 2019 (*Science Advances*
  5:eaaw2594) place Japanese near 8 per second among 17 languages.
* Korean, syllables per second: read speech of the Korean Standard Speech Database measured as
  speaking rate (with pauses) and articulation rate in syllables/s (Lee, Shin, Yoo & Kim 2017,
  *Phonetics and Speech Sciences* 9(1):27-39); commonly ~5-6 syllables/s, slower for older speakers.
* Pauses: listeners rate English most natural with 0.6 s pauses at commas and 0.6-1.2 s between
  sentences (Front. Psychol. 2022, 13:778018); in a read Japanese paragraph ~30 % of the time was pause,
  80 % of it sentence-final. The word rates above already include a reader's pauses, so the
  punctuation pauses added here are kept below those figures (they are headroom, not a model).
* Slower speech for edits: the MSP recordings above take 1.5x as long slow as normal (2.48 vs 3.74
  words/s) and 0.66x fast; sadness and tenderness lower the speech rate (Scherer 2003, *Speech
  Communication* 40:227-256).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .constants import AUDIO_TOKENS_PER_SECOND, TOKENS_PER_GROUP
from .vocabulary import (
    DIALECT_PATTERN,
    INLINE_TAG_PATTERN,
    PARALINGUISTIC_BRACKET_PATTERN,
    PAUSE_PATTERN,
    check_edit_type,
    check_edit_value,
    pause_seconds,
)

logger = logging.getLogger(__name__)

# --- speaking rates (sources in the module docstring) ---------------------------------------------
ENGLISH_WORDS_PER_MINUTE_NORMAL = 150.0
ENGLISH_WORDS_PER_MINUTE_SLOW = 110.0
MANDARIN_SYLLABLES_PER_SECOND_NORMAL = 4.5
MANDARIN_SYLLABLES_PER_SECOND_SLOW = 3.0
JAPANESE_MORAE_PER_SECOND_NORMAL = 7.0
JAPANESE_MORAE_PER_SECOND_SLOW = 5.0
KOREAN_SYLLABLES_PER_SECOND_NORMAL = 5.5
KOREAN_SYLLABLES_PER_SECOND_SLOW = 4.0

# Punctuation pauses (one per gap between spoken units, the strongest mark of the gap counts).
CLAUSE_PAUSE_SECONDS_NORMAL = 0.2  # , ; : 、 — ...
CLAUSE_PAUSE_SECONDS_SLOW = 0.4
SENTENCE_PAUSE_SECONDS_NORMAL = 0.4  # . ! ? 。 ！ ？ … and line breaks
SENTENCE_PAUSE_SECONDS_SLOW = 0.7

# A non-verbal sound written as "[laugh]" etc. in clone text (a laugh or sigh lasts about 1 s).
PARALINGUISTIC_SOUND_SECONDS_NORMAL = 1.0
PARALINGUISTIC_SOUND_SECONDS_SLOW = 1.5

# Unit conversions for text that is not counted in syllables.
# Words up to this many letters count as one word (the mean English word is 4.7 letters, and the
# words-per-minute rates above count words of every length); a longer word counts as letters / 7.
LATIN_LETTERS_PER_LONG_WORD = 7.0
DIGIT_WORDS = 1.5  # a digit read out: "1995" -> "nineteen ninety-five", "1,234,567" -> 11 words / 7 digits
SYMBOL_WORDS = 1.0  # "%", "&", "$", ... are read as a word
JAPANESE_MORAE_PER_KANJI = 2.0  # Sino-Japanese readings are mostly 2 morae (gaku, sei, hon); kun 1-3
SECONDS_PER_MINUTE = 60.0

# --- margins ---------------------------------------------------------------------------------------
CLONE_MARGIN = 1.1
CLONE_EXTRA_SECONDS = 1.2  # leading / trailing silence around the speech (1.2: no real utterance of bench/data/real_utterances.tsv is cut)
EDIT_MARGIN = 1.15
EDIT_EXTRA_SECONDS = 1.0

# Length of an edit's output relative to its input, per edit type (before the margin).
EMOTION_LENGTH_FACTOR = 1.3  # expressive readings (sad, depressed, fear) are slower
STYLE_LENGTH_FACTOR = 1.3  # whisper, older, recite, deeply, story ... are slower
SPEED_LENGTH_FACTORS: dict[str, float] = {
    "faster": 1.0,  # shorter output; the input length stays the cap in case the model keeps the pace
    "more faster": 1.0,
    "slower": 1.5,  # slow vs normal reading: 3.74 / 2.48 words/s
    "more slower": 2.0,
}
DENOISE_LENGTH_FACTOR = 1.0  # same speech, same length
VAD_LENGTH_FACTOR = 1.0  # removes silence: never longer than the input
PARALINGUISTIC_LENGTH_FACTOR = 1.0  # plus PARALINGUISTIC_SOUND_SECONDS_SLOW per inserted sound
PARALINGUISTIC_DEFAULT_SOUNDS = 1  # when the new text is not given, assume one added sound


@dataclass(frozen=True)
class Pace:
    """Speaking rates of one reader; ``NORMAL_PACE`` and ``SLOW_PACE`` are the two the pack uses."""

    english_words_per_minute: float
    mandarin_syllables_per_second: float
    japanese_morae_per_second: float
    korean_syllables_per_second: float
    clause_pause_seconds: float
    sentence_pause_seconds: float
    paralinguistic_sound_seconds: float


NORMAL_PACE = Pace(
    ENGLISH_WORDS_PER_MINUTE_NORMAL, MANDARIN_SYLLABLES_PER_SECOND_NORMAL, JAPANESE_MORAE_PER_SECOND_NORMAL,
    KOREAN_SYLLABLES_PER_SECOND_NORMAL, CLAUSE_PAUSE_SECONDS_NORMAL, SENTENCE_PAUSE_SECONDS_NORMAL,
    PARALINGUISTIC_SOUND_SECONDS_NORMAL,
)
SLOW_PACE = Pace(
    ENGLISH_WORDS_PER_MINUTE_SLOW, MANDARIN_SYLLABLES_PER_SECOND_SLOW, JAPANESE_MORAE_PER_SECOND_SLOW,
    KOREAN_SYLLABLES_PER_SECOND_SLOW, CLAUSE_PAUSE_SECONDS_SLOW, SENTENCE_PAUSE_SECONDS_SLOW,
    PARALINGUISTIC_SOUND_SECONDS_SLOW,
)


class TokenBudgetError(ValueError):
    """An impossible input to the estimators (negative token count, bad bound)."""


# --- counting the text -----------------------------------------------------------------------------
_SENTENCE_MARKS = frozenset(".!?。！？…‥\n")
_CLAUSE_MARKS = frozenset(",;:、，；：—–()（）「」『』《》〈〉\"“”‘’·・")
_NUMBER_JOINERS = frozenset(".,")  # "3.14", "1,234": not a pause between two digits
_APOSTROPHES = frozenset("'’")
_SYMBOL_WORDS = frozenset("%&$€£¥@#+=°‰§")
# Small kana join the previous mora (きゃ = kya is one mora); っ/ッ and ー are morae of their own.
_SMALL_KANA = frozenset("ぁぃぅぇぉゃゅょゎゕゖァィゥェォャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ")
_NO_GAP, _CLAUSE_GAP, _SENTENCE_GAP = 0, 1, 2
_ROUNDING_SLACK = 1e-9  # float error: 30 s must give exactly 250 groups, not 251


def is_han_char(ch: str) -> bool:
    """A Chinese character (CJK ideograph, incl. extensions and 〇): one syllable in Mandarin."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
            or 0x20000 <= cp <= 0x3134F or cp == 0x3007)


def is_kana_char(ch: str) -> bool:
    """Hiragana, katakana (incl. the long-vowel mark) or half-width katakana."""
    cp = ord(ch)
    return 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F


def is_hangul_char(ch: str) -> bool:
    """A precomposed Hangul syllable block: one Korean syllable."""
    return 0xAC00 <= ord(ch) <= 0xD7AF


def is_unspaced_char(ch: str) -> bool:
    """Characters of scripts written without spaces between words (Chinese, Japanese) and their
    full-width punctuation (U+3000-303F, U+FF00-FFEF)."""
    cp = ord(ch)
    return is_han_char(ch) or is_kana_char(ch) or 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF


@dataclass(frozen=True)
class SpeechCounts:
    """What a text asks a reader to say: spoken units per script, pauses, sounds."""

    han_characters: int = 0
    kana_morae: int = 0
    hangul_syllables: int = 0
    latin_words: float = 0.0  # words weighted by length (max(1, letters / 7) each)
    digits: int = 0
    symbols: int = 0
    clause_pauses: int = 0
    sentence_pauses: int = 0
    sounds: int = 0  # [laugh]-style marks (any release spelling)
    explicit_pause_seconds: float = 0.0  # [pause:..] markers
    japanese: bool = False  # Han characters read as Japanese kanji (kana present or [Japanese])

    def seconds(self, pace: Pace) -> float:
        """Seconds a reader at ``pace`` needs for these counts."""
        if self.japanese:
            han = self.han_characters * JAPANESE_MORAE_PER_KANJI / pace.japanese_morae_per_second
        else:
            han = self.han_characters / pace.mandarin_syllables_per_second
        words = self.latin_words + self.digits * DIGIT_WORDS + self.symbols * SYMBOL_WORDS
        return (
            han
            + self.kana_morae / pace.japanese_morae_per_second
            + self.hangul_syllables / pace.korean_syllables_per_second
            + words * SECONDS_PER_MINUTE / pace.english_words_per_minute
            + self.clause_pauses * pace.clause_pause_seconds
            + self.sentence_pauses * pace.sentence_pause_seconds
            + self.sounds * pace.paralinguistic_sound_seconds
            + self.explicit_pause_seconds
        )


def count_speech(text: str) -> SpeechCounts:
    """Count the spoken units of ``text`` (one pass; inline ``<...>`` edit tags are never spoken)."""
    sounds = len(PARALINGUISTIC_BRACKET_PATTERN.findall(text))
    japanese = any(m.group(1).lower() == "japanese" for m in DIALECT_PATTERN.finditer(text))
    explicit = 0.0
    for m in PAUSE_PATTERN.finditer(text):
        explicit += pause_seconds(m.group(0))
    # Markup becomes a newline-free separator: it ends a word but adds no punctuation pause.
    for pattern in (PAUSE_PATTERN, PARALINGUISTIC_BRACKET_PATTERN, DIALECT_PATTERN, INLINE_TAG_PATTERN):
        text = pattern.sub(" ", text)

    han = kana = hangul = digits = symbols = 0
    words = 0.0
    gaps = [0, 0, 0]
    gap = _NO_GAP
    seen_speech = False
    word_len = 0
    n = len(text)
    for i, ch in enumerate(text):
        is_letter = joins_word = False
        spoken = True
        if is_han_char(ch):
            han += 1
        elif is_kana_char(ch):
            if ch not in _SMALL_KANA:
                kana += 1
            japanese = True
        elif is_hangul_char(ch):
            hangul += 1
        elif ch.isalpha():
            is_letter = True
        elif ch.isdigit():
            digits += 1
        elif ch in _APOSTROPHES and word_len and i + 1 < n and text[i + 1].isalpha():
            joins_word = True  # "can't": part of the word, not a letter of its own
        elif ch in _SYMBOL_WORDS:
            symbols += 1
        else:
            spoken = False
            if ch in _NUMBER_JOINERS and 0 < i < n - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
                pass  # decimal point / thousands separator inside a number
            elif ch in _SENTENCE_MARKS:
                gap = max(gap, _SENTENCE_GAP)
            elif ch in _CLAUSE_MARKS:
                gap = max(gap, _CLAUSE_GAP)
        if is_letter:
            word_len += 1
        elif word_len and not joins_word:
            words += max(1.0, word_len / LATIN_LETTERS_PER_LONG_WORD)
            word_len = 0
        if spoken:
            if seen_speech and gap:
                gaps[gap] += 1
            gap = _NO_GAP
            seen_speech = True
    if word_len:
        words += max(1.0, word_len / LATIN_LETTERS_PER_LONG_WORD)
    if seen_speech and gap:
        gaps[gap] += 1  # the final full stop: the reader's closing pause
    return SpeechCounts(
        han_characters=han, kana_morae=kana, hangul_syllables=hangul, latin_words=words, digits=digits,
        symbols=symbols, clause_pauses=gaps[_CLAUSE_GAP], sentence_pauses=gaps[_SENTENCE_GAP], sounds=sounds,
        explicit_pause_seconds=explicit, japanese=japanese,
    )


def speech_seconds(text: str, pace: Pace = SLOW_PACE) -> float:
    """Seconds a reader at ``pace`` needs to say ``text`` (pauses and sounds included, no margin)."""
    return count_speech(text).seconds(pace)


# --- seconds <-> tokens ----------------------------------------------------------------------------
def seconds_to_tokens(seconds: float) -> int:
    """Audio ids for ``seconds`` of speech, rounded up to whole 5-token (120 ms) groups."""
    groups = math.ceil(max(0.0, seconds) * AUDIO_TOKENS_PER_SECOND / TOKENS_PER_GROUP - _ROUNDING_SLACK)
    return groups * TOKENS_PER_GROUP


def tokens_to_seconds(n_tokens: int) -> float:
    return n_tokens / AUDIO_TOKENS_PER_SECOND


def _bound(tokens: int, floor: int, max_tokens: int | None, what: str) -> int:
    if max_tokens is None:
        return tokens
    if int(max_tokens) < TOKENS_PER_GROUP:
        raise TokenBudgetError(
            f"max_tokens={max_tokens} leaves no room for audio (one 120 ms group is {TOKENS_PER_GROUP} tokens); "
            "shorten the prompt or raise the context length."
        )
    if floor > max_tokens:
        logger.warning(
            "The %s needs about %d tokens at a normal pace but the context leaves %d: the output will be "
            "truncated. Split the text into shorter segments.", what, floor, max_tokens,
        )
    return min(tokens, int(max_tokens))


# --- public estimators -----------------------------------------------------------------------------
def normal_clone_tokens(text: str) -> int:
    """Tokens a NORMAL-pace reading of ``text`` needs (the floor of :func:`estimate_clone_tokens`)."""
    return seconds_to_tokens(speech_seconds(text, NORMAL_PACE))


def estimate_clone_tokens(text: str, *, max_tokens: int | None = None) -> int:
    """Cap on new tokens for cloning ``text``: a slow reading plus margin, in whole 5-token groups.

    ``text`` may hold ``[pause:..]`` markers, ``[laugh]``-style sounds, a dialect prefix and inline
    ``<...>`` edit tags (not spoken). ``max_tokens``: room left in the context; the cap never exceeds it.
    """
    slow = speech_seconds(text, SLOW_PACE) * CLONE_MARGIN + CLONE_EXTRA_SECONDS
    floor = normal_clone_tokens(text)
    return _bound(max(seconds_to_tokens(slow), floor), floor, max_tokens, "clone text")


def edit_length_factor(edit_type: str, edit_info: str | None = None) -> float:
    """Output length / input length of one edit, before the margin."""
    edit_type = check_edit_type(edit_type)
    if edit_type == "speed":
        return SPEED_LENGTH_FACTORS[check_edit_value("speed", edit_info)]
    if edit_info is not None and edit_type in ("emotion", "style"):
        check_edit_value(edit_type, edit_info)
    return {
        "emotion": EMOTION_LENGTH_FACTOR,
        "style": STYLE_LENGTH_FACTOR,
        "denoise": DENOISE_LENGTH_FACTOR,
        "vad": VAD_LENGTH_FACTOR,
        "paralinguistic": PARALINGUISTIC_LENGTH_FACTOR,
    }[edit_type]


def count_paralinguistic_sounds(text: str) -> int:
    """Sounds a paralinguistic new text asks for: ``[laugh]`` marks and inline ``<laugh>`` tags (any spelling)."""
    inline = 0
    for m in INLINE_TAG_PATTERN.finditer(text):
        for part in m.group(0).strip("<> ").split("|"):
            fields = [f.strip() for f in part.split(":")]
            name = fields[1] if fields[0].lower() == "paralinguistic" and len(fields) > 1 else fields[0]
            if PARALINGUISTIC_BRACKET_PATTERN.fullmatch(f"[{name}]"):
                inline += 1
    return len(PARALINGUISTIC_BRACKET_PATTERN.findall(text)) + inline


def estimate_edit_tokens(
    n_input_tokens: int,
    edit_type: str,
    edit_info: str | None = None,
    text: str | None = None,
    *,
    max_tokens: int | None = None,
) -> int:
    """Cap on new tokens for one edit of an input of ``n_input_tokens`` audio ids.

    ``edit_info``: the speed phrase for speed edits (emotion / style values are checked, not needed).
    ``text``: for paralinguistic edits, the new text whose ``[Tag]`` marks (or ``<Tag>`` inline tags)
    each add a sound. The cap is never below the input's own length.
    """
    if isinstance(n_input_tokens, bool) or int(n_input_tokens) != n_input_tokens or n_input_tokens < 0:
        raise TokenBudgetError(f"n_input_tokens must be a whole number >= 0, got {n_input_tokens!r}.")
    edit_type = check_edit_type(edit_type)
    seconds = tokens_to_seconds(int(n_input_tokens)) * edit_length_factor(edit_type, edit_info)
    if edit_type == "paralinguistic":
        sounds = count_paralinguistic_sounds(text) if text else PARALINGUISTIC_DEFAULT_SOUNDS
        seconds += max(sounds, PARALINGUISTIC_DEFAULT_SOUNDS) * PARALINGUISTIC_SOUND_SECONDS_SLOW
    tokens = seconds_to_tokens(seconds * EDIT_MARGIN + EDIT_EXTRA_SECONDS)
    floor = seconds_to_tokens(tokens_to_seconds(int(n_input_tokens)))
    return _bound(max(tokens, floor), floor, max_tokens, f"{edit_type} edit")
