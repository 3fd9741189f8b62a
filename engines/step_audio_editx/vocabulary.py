"""The edit vocabulary Step-Audio-EditX was trained on: the only copy in the pack.

Anything a user types (node widgets, inline tags, CLI flags, manifests) is checked here; an unknown
value is rejected with the closest trained spelling named, because the model silently degrades on
instructions it never saw.
"""

from __future__ import annotations

import difflib
from typing import Iterable

EDIT_TYPES: tuple[str, ...] = ("emotion", "style", "speed", "paralinguistic", "denoise", "vad")

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


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The valid spelling nearest to ``value`` (case-insensitive), or None when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.5)
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
