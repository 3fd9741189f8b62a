"""The edit vocabulary Step-Audio-EditX was trained on: the only copy in the pack.

Anything a user types (node widgets, inline tags, CLI flags, manifests) is checked here; an unknown
value is rejected with the closest trained spelling named, because the model silently degrades on
instructions it never saw.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

EDIT_TYPES: tuple[str, ...] = ("emotion", "style", "speed", "paralinguistic", "denoise", "vad")
TRANSCRIPT_FREE_EDITS: tuple[str, ...] = ("denoise", "vad")  # their instructions carry no text

EMOTIONS: tuple[str, ...] = (
    "happy", "angry", "sad", "humour", "confusion", "disgusted", "empathy", "embarrass", "fear",
    "surprised", "excited", "depressed", "coldness", "admiration", "remove",
)

STYLES: tuple[str, ...] = (
    "serious", "arrogant", "child", "older", "girl", "pure", "sister", "sweet", "ethereal", "whisper",
    "gentle", "recite", "generous", "act_coy", "warm", "shy", "comfort", "authority", "chat", "radio",
    "soulful", "story", "vivid", "program", "news", "advertising", "roar", "murmur", "shout", "deeply",
    "loudly", "remove", "exaggerated",
)

SPEEDS: tuple[str, ...] = ("faster", "slower", "more faster", "more slower")

# The official non-verbal sound tags, written into a transcript as "[Name]".
PARALINGUISTIC_TAGS: tuple[str, ...] = (
    "Breathing", "Laughter", "Surprise-oh", "Confirmation-en", "Uhm", "Surprise-ah", "Surprise-wa",
    "Sigh", "Question-ei", "Dissatisfaction-hnn",
)

# Clone text may start with one of these to ask for a dialect or language.
DIALECTS: tuple[str, ...] = ("Sichuanese", "Cantonese", "Japanese", "Korean")

# Edit types whose instruction carries a value from one of the lists above.
EDIT_VALUES: dict[str, tuple[str, ...]] = {"emotion": EMOTIONS, "style": STYLES, "speed": SPEEDS}

MAX_EDIT_ITERATIONS = 5


class VocabularyError(ValueError):
    """A value outside the trained vocabulary; the message names the closest valid spelling."""


CLOSEST_CUTOFF = 0.5  # difflib similarity below which no spelling is suggested


def closest(value: str, choices: Iterable[str], cutoff: float = CLOSEST_CUTOFF) -> str | None:
    """The valid spelling nearest to ``value`` (case-insensitive), or None when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[hits[0]] if hits else None


def _reject(kind: str, value: str, choices: Iterable[str]) -> VocabularyError:
    choices = list(choices)
    guess = closest(value, choices)
    hint = f" Did you mean {guess!r}?" if guess else ""
    return VocabularyError(
        f"Unknown {kind} {value!r}.{hint} Valid {kind} values: {', '.join(choices)}."
    )


def normalize_speed(value: str) -> str:
    """Map user spellings ("more_faster", "More-Faster", " faster ") to the trained phrase."""
    spelled = " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    if spelled in SPEEDS:
        return spelled
    if spelled == "remove":
        # The official instruction builder maps speed "remove" onto the emotion-remove sentence
        # ("Remove any emotion in the following audio ..."): the model never learnt a speed reset.
        raise VocabularyError(
            "Speed has no 'remove' in the trained vocabulary (the official code would silently send the "
            "emotion-remove instruction instead). Apply the opposite speed ('faster' or 'slower') to undo "
            f"a speed change, or use emotion 'remove'. Valid speed values: {', '.join(SPEEDS)}."
        )
    raise _reject("speed", value, SPEEDS)


def check_edit_type(edit_type: str) -> str:
    normalized = edit_type.strip().lower()
    if normalized in EDIT_TYPES:
        return normalized
    raise _reject("edit type", edit_type, EDIT_TYPES)


def check_edit_value(edit_type: str, value: str | None) -> str | None:
    """Validate the value an edit type needs; returns the canonical spelling (None if it takes none)."""
    edit_type = check_edit_type(edit_type)
    if edit_type not in EDIT_VALUES:
        return None
    if value is None or not str(value).strip():
        raise VocabularyError(
            f"The {edit_type} edit needs a value: one of {', '.join(EDIT_VALUES[edit_type])}."
        )
    if edit_type == "speed":
        return normalize_speed(value)
    normalized = value.strip().lower().replace("-", "_").replace(" ", "_")
    if normalized in EDIT_VALUES[edit_type]:
        return normalized
    raise _reject(edit_type, value, EDIT_VALUES[edit_type])


def check_paralinguistic_tag(name: str) -> str:
    """Canonical spelling of a non-verbal tag name (case-insensitive; brackets allowed)."""
    bare = name.strip().strip("[]<>").strip()
    for tag in PARALINGUISTIC_TAGS:
        if tag.lower() == bare.lower():
            return tag
    raise _reject("paralinguistic tag", name, PARALINGUISTIC_TAGS)


# --- markup written inside texts -----------------------------------------------------------------
# One copy of each pattern: the edit-tag parser, the segmenter and the token estimator share them.

# An inline edit tag as users write it (TTS-Audio-Suite syntax): "<", a letter, then letters, digits,
# "_", "-", ":", "|", "." or spaces, then ">". Its grammar is checked by utils/text/edit_tags.py;
# anything of this shape that is not a valid tag is an error there, never spoken.
INLINE_TAG_PATTERN = re.compile(r"<\s*[A-Za-z][A-Za-z0-9_\-:|. ]*>")

# An official transcript mark of a non-verbal sound, e.g. "[Laughter]" (case-insensitive).
PARALINGUISTIC_BRACKET_PATTERN = re.compile(
    r"\[\s*(" + "|".join(re.escape(t) for t in PARALINGUISTIC_TAGS) + r")\s*\]", re.IGNORECASE
)

# A dialect / language prefix of clone text, e.g. "[Sichuanese]".
DIALECT_PATTERN = re.compile(r"\[\s*(" + "|".join(DIALECTS) + r")\s*\]", re.IGNORECASE)

# Pause markers (TTS-Audio-Suite syntax): [pause:2] and [pause:1.5] are seconds, [pause:2s] seconds,
# [pause:500ms] milliseconds; "wait" and "stop" are aliases of "pause".
PAUSE_ALIASES: tuple[str, ...] = ("pause", "wait", "stop")
PAUSE_PATTERN = re.compile(r"\[\s*(" + "|".join(PAUSE_ALIASES) + r")\s*:([^\[\]]*)\]", re.IGNORECASE)
_PAUSE_VALUE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", re.IGNORECASE)
MAX_PAUSE_SECONDS = 30.0
_MS_PER_SECOND = 1000.0


def pause_seconds(marker: str) -> float:
    """Seconds of a pause marker (``"[pause:500ms]"``) or of its value alone (``"500ms"``, ``"1.5"``)."""
    m = PAUSE_PATTERN.fullmatch(marker.strip())
    spec = m.group(2) if m else marker
    v = _PAUSE_VALUE.fullmatch(spec)
    if v is None:
        raise VocabularyError(
            f"Pause {marker!r} is not understood: write [pause:1.5] or [pause:1.5s] (seconds) or [pause:500ms]."
        )
    seconds = float(v.group(1)) / (_MS_PER_SECOND if (v.group(2) or "").lower() == "ms" else 1.0)
    if seconds > MAX_PAUSE_SECONDS:
        raise VocabularyError(
            f"Pause {marker!r} is {seconds:g} s; the longest pause is {MAX_PAUSE_SECONDS:g} s. Split it into several."
        )
    return seconds
