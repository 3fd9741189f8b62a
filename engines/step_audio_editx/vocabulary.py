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

# --- non-verbal sounds ("paralinguistic" tags) -------------------------------------------------
# Two official weight releases share the hub name stepfun-ai/Step-Audio-EditX. Each was trained on its
# own tag spellings, written into a transcript as "[name]"; the pack writes the spelling of the release
# the engine is told it runs (EngineConfig.weights_release) and accepts every spelling as input.
WEIGHTS_RELEASE_CURRENT = "2026-01"  # the weights of 2026-01-29: what a download gets today
WEIGHTS_RELEASE_ORIGINAL = "2025-11"  # the first release (Nov 2025)
WEIGHTS_RELEASES: tuple[str, ...] = (WEIGHTS_RELEASE_CURRENT, WEIGHTS_RELEASE_ORIGINAL)

# The 22 tags of the current model card, in its order.
PARALINGUISTIC_TAGS: tuple[str, ...] = (
    "sigh", "inhale", "laugh", "chuckle", "exhale", "clears throat", "snort", "giggle", "cough", "breath", "uhm",
    "Confirmation-en", "Surprise-oh", "Surprise-ah", "Surprise-wa", "Surprise-yo", "Dissatisfaction-hnn",
    "Question-ei", "Question-ah", "Question-en", "Question-yi", "Question-oh",
)
# The 10 tags of the Nov-2025 model card, in its order.
PARALINGUISTIC_TAGS_ORIGINAL: tuple[str, ...] = (
    "Breathing", "Laughter", "Surprise-oh", "Confirmation-en", "Uhm", "Surprise-ah", "Surprise-wa",
    "Sigh", "Question-ei", "Dissatisfaction-hnn",
)
# Original spellings that the current release renamed (the others only differ in case).
PARALINGUISTIC_RENAMED: dict[str, str] = {"Laughter": "laugh", "Breathing": "breath", "Uhm": "uhm", "Sigh": "sigh"}

PARALINGUISTIC_TAGS_BY_RELEASE: dict[str, tuple[str, ...]] = {
    WEIGHTS_RELEASE_CURRENT: PARALINGUISTIC_TAGS,
    WEIGHTS_RELEASE_ORIGINAL: PARALINGUISTIC_TAGS_ORIGINAL,
}


def _tag_key(name: str) -> str:
    """Lookup key of a tag name: case, "_", "-" and runs of spaces do not matter ("Clears_Throat")."""
    return " ".join(name.strip().strip("[]<>").lower().replace("_", " ").replace("-", " ").split())


# Every accepted spelling (key) -> the current tag.
_CURRENT_BY_KEY: dict[str, str] = {_tag_key(t): t for t in PARALINGUISTIC_TAGS}
for _old in PARALINGUISTIC_TAGS_ORIGINAL:
    _CURRENT_BY_KEY[_tag_key(_old)] = PARALINGUISTIC_RENAMED.get(_old, _old)
# The current tag -> its original spelling (tags the original release did not have are absent).
_ORIGINAL_BY_CURRENT: dict[str, str] = {PARALINGUISTIC_RENAMED.get(t, t): t for t in PARALINGUISTIC_TAGS_ORIGINAL}
ALL_PARALINGUISTIC_SPELLINGS: tuple[str, ...] = tuple(dict.fromkeys(PARALINGUISTIC_TAGS + PARALINGUISTIC_TAGS_ORIGINAL))

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


def check_weights_release(release: str) -> str:
    """The weights release name (``"2026-01"`` or ``"2025-11"``); anything else is rejected."""
    value = str(release).strip()
    if value in WEIGHTS_RELEASES:
        return value
    raise VocabularyError(
        f"Unknown weights release {release!r}: use {WEIGHTS_RELEASE_CURRENT!r} for the Step-Audio-EditX weights "
        f"published on 2026-01-29 (what a download gets today) or {WEIGHTS_RELEASE_ORIGINAL!r} for the first "
        "release (Nov 2025)."
    )


def canonical_paralinguistic_tag(name: str) -> str | None:
    """The current spelling of any accepted tag spelling (``"Laughter"`` -> ``"laugh"``), or None."""
    return _CURRENT_BY_KEY.get(_tag_key(name))


def check_paralinguistic_tag(name: str) -> str:
    """Current spelling of a non-verbal tag name (case, "_"/"-" and brackets do not matter; original
    spellings such as ``Laughter`` are aliases); unknown names are rejected with the closest tag."""
    tag = canonical_paralinguistic_tag(name)
    if tag is None:
        raise _reject("paralinguistic tag", name, PARALINGUISTIC_TAGS)
    return tag


def paralinguistic_tag_for_release(name: str, release: str = WEIGHTS_RELEASE_CURRENT) -> str:
    """The spelling the ``release`` weights were trained on for tag ``name`` (any accepted spelling).

    Raises ``VocabularyError`` for an unknown tag, or a tag the original release never learnt.
    """
    release = check_weights_release(release)
    tag = check_paralinguistic_tag(name)
    if release == WEIGHTS_RELEASE_CURRENT:
        return tag
    original = _ORIGINAL_BY_CURRENT.get(tag)
    if original is None:
        raise VocabularyError(
            f"The {WEIGHTS_RELEASE_ORIGINAL} Step-Audio-EditX weights were not trained on [{tag}]; it needs the "
            f"{WEIGHTS_RELEASE_CURRENT} weights (set weights_release to {WEIGHTS_RELEASE_CURRENT!r}). "
            f"Tags of the {WEIGHTS_RELEASE_ORIGINAL} weights: {', '.join(PARALINGUISTIC_TAGS_ORIGINAL)}."
        )
    return original


# --- markup written inside texts -----------------------------------------------------------------
# One copy of each pattern: the edit-tag parser, the segmenter and the token estimator share them.

# An inline edit tag as users write it (TTS-Audio-Suite syntax): "<", a letter, then letters, digits,
# "_", "-", ":", "|", "." or spaces, then ">". Its grammar is checked by utils/text/edit_tags.py;
# anything of this shape that is not a valid tag is an error there, never spoken.
INLINE_TAG_PATTERN = re.compile(r"<\s*[A-Za-z][A-Za-z0-9_\-:|. ]*>")

# Any accepted spelling of a tag name inside a pattern: case-insensitive, "_", "-" or spaces between words.
PARALINGUISTIC_NAME_REGEX = "|".join(
    r"[\s_-]*".join(re.escape(w) for w in _tag_key(t).split())
    for t in sorted(ALL_PARALINGUISTIC_SPELLINGS, key=len, reverse=True)
)

# An official transcript mark of a non-verbal sound in any accepted spelling: "[laugh]", "[Laughter]",
# "[clears throat]" (case-insensitive). Group 1 is the name as written.
PARALINGUISTIC_BRACKET_PATTERN = re.compile(r"\[\s*(" + PARALINGUISTIC_NAME_REGEX + r")\s*\]", re.IGNORECASE)


def respell_paralinguistic_marks(text: str, release: str = WEIGHTS_RELEASE_CURRENT) -> str:
    """``text`` with every ``[tag]`` mark written as the ``release`` weights learnt it (``[Laughter]`` ->
    ``[laugh]`` for the current weights, ``[laugh]`` -> ``[Laughter]`` for the original ones)."""
    return PARALINGUISTIC_BRACKET_PATTERN.sub(
        lambda m: f"[{paralinguistic_tag_for_release(m.group(1), release)}]", text
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
