"""Inline edit tags: ``<emotion:happy>``, ``<Laughter:2|style:whisper>`` ... parsed out of user text.

Syntax (the one TTS-Audio-Suite users already write; names and values are case-insensitive):

==================================  ======================================================================
``<emotion:VALUE[:N]>``             VALUE from ``vocabulary.EMOTIONS`` (incl. ``remove``)
``<style:VALUE[:N]>``               VALUE from ``vocabulary.STYLES`` (``act_coy``, ``act-coy``, ``act coy``)
``<speed:VALUE[:N]>``               ``faster``, ``slower``, ``more faster``, ``more slower``; ``more_faster``,
                                    ``More-Faster`` ... are normalised to the trained phrase
``<denoise[:N]>``, ``<vad[:N]>``    no value
``<laugh[:N]>``                     any of the 22 official sounds (``vocabulary.PARALINGUISTIC_TAGS``), the
                                    original spellings (``<Laughter>``, ``<Breathing>``, ``<Uhm>``) too;
                                    also ``<paralinguistic:laugh[:N]>``, ``<clears_throat>``
``<A|B|...>``                       several tags at one place, e.g. ``<Laughter:2|style:whisper>``
==================================  ======================================================================

N is the number of edit iterations, 1..5 (default 1). Anything shaped like a tag (``<`` + a letter,
see ``vocabulary.INLINE_TAG_PATTERN``) that is not a valid tag raises :class:`EditTagError` naming the
tag, its character offset in the input and the closest valid spelling: tags are never spoken.

Positions: every tag gets the character offset in ``clean_text`` where it stood. Paralinguistic tags
need it (the sound is inserted there); for the other kinds it only records where the tag was written.

Whitespace rule (tag removal): a *run* is one or more tags separated only by whitespace, together
with the whitespace around it. A run is replaced by

* a newline if its whitespace holds a newline, else a single space if it holds any whitespace;
* nothing if closing punctuation follows or opening punctuation precedes it
  (``funny <Laughter>, right`` -> ``funny, right``), a newline kept;
* a single space if it touches no whitespace but separates two letters/digits of a spaced script
  (``word<Laughter>word`` -> ``word word``);
* nothing otherwise (Chinese / Japanese text, punctuation: ``很好，<Laughter>我们`` -> ``很好，我们``).

Each tag of the run is placed right after that separator (at the start of the following text).
Whitespace that touches no tag is left as written, and ``clean_text`` is stripped at both ends
(positions shift accordingly and stay within ``0..len(clean_text)``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...engines.step_audio_editx.token_budget import is_unspaced_char
from ...engines.step_audio_editx.vocabulary import (
    EDIT_TYPES,
    EDIT_VALUES,
    EMOTIONS,
    INLINE_TAG_PATTERN,
    MAX_EDIT_ITERATIONS,
    ALL_PARALINGUISTIC_SPELLINGS,
    PARALINGUISTIC_TAGS,
    STYLES,
    VocabularyError,
    canonical_paralinguistic_tag,
    check_edit_value,
    closest,
    normalize_speed,
)

# Edits are applied in this order (the seed's order): whole-utterance changes first, sound
# insertion last so its positions refer to the final wording.
EDIT_PRIORITY: tuple[str, ...] = ("emotion", "style", "speed", "denoise", "vad", "paralinguistic")
PARALINGUISTIC = "paralinguistic"
VALUELESS_KINDS: tuple[str, ...] = ("denoise", "vad")
DEFAULT_ITERATIONS = 1
MIN_ITERATIONS = 1
# Punctuation written without a space before it (closing) or after it (opening).
CLOSING_PUNCTUATION = frozenset(",.!?;:)]}”’»…、。，！？；：）】」』》")
OPENING_PUNCTUATION = frozenset("([{“‘«（【「『《")
PIPE = "|"
FIELD_SEPARATOR = ":"
# TTS-Audio-Suite's voice-restoration tag (ChatterBox VC): recognised only to explain that it is not ours.
_FOREIGN_TAGS = {"restore": "TTS-Audio-Suite's voice restoration through ChatterBox VC"}


class EditTagError(ValueError):
    """An inline tag that is not valid. ``tag``: the tag as written; ``offset``: its character offset
    in the parsed text; ``suggestion``: the closest valid spelling, if any."""

    def __init__(self, message: str, *, tag: str, offset: int, suggestion: str | None = None):
        super().__init__(message)
        self.tag = tag
        self.offset = offset
        self.suggestion = suggestion


@dataclass(frozen=True)
class EditTag:
    """One edit asked for inside a text.

    ``kind``: emotion / style / speed / denoise / vad / paralinguistic. ``value``: canonical value
    (emotion or style name, speed phrase, official sound name such as ``"Laughter"``; None for
    denoise / vad). ``iterations``: 1..5. ``position``: character offset in ``clean_text``.
    ``source`` / ``source_offset``: the whole tag as written and its offset in the original text.
    """

    kind: str
    value: str | None
    iterations: int = DEFAULT_ITERATIONS
    position: int = 0
    source: str = ""
    source_offset: int = -1

    @property
    def is_positional(self) -> bool:
        """True when the position matters (a sound inserted there)."""
        return self.kind == PARALINGUISTIC

    def moved(self, position: int) -> EditTag:
        """The same tag at another position (used when a text is cut into chunks)."""
        return EditTag(self.kind, self.value, self.iterations, position, self.source, self.source_offset)


@dataclass(frozen=True)
class EditStep:
    """One model call of the edit chain: a single edit, or all sounds of a text together."""

    kind: str
    value: str | None
    iterations: int
    tags: tuple[EditTag, ...]


# --- parsing --------------------------------------------------------------------------------------
def parse_edit_tags(text: str) -> tuple[str, list[EditTag]]:
    """Split ``text`` into the words to speak and the edits asked for.

    Returns ``(clean_text, tags)``: ``clean_text`` has every tag removed (whitespace rule in the
    module docstring); ``tags`` are in the order written, each with its position in ``clean_text``.
    Raises :class:`EditTagError` for anything tag-shaped that is not a valid tag.
    """
    matches = list(INLINE_TAG_PATTERN.finditer(text))
    out: list[str] = []
    out_len = 0
    cursor = 0
    tags: list[EditTag] = []
    i = 0
    while i < len(matches):
        run = [matches[i]]
        while i + 1 < len(matches) and _only_space(text[run[-1].end():matches[i + 1].start()]):
            i += 1
            run.append(matches[i])
        i += 1
        start, end = run[0].start(), run[-1].end()
        while start > cursor and text[start - 1].isspace():
            start -= 1
        while end < len(text) and text[end].isspace():
            end += 1
        kept = text[cursor:start]
        out.append(kept)
        out_len += len(kept)
        spaces = "".join(text[a.end():b.start()] for a, b in itertools.pairwise(run))
        spaces += text[start:run[0].start()] + text[run[-1].end():end]
        before = text[start - 1] if start > 0 else ""
        after = text[end] if end < len(text) else ""
        sep = _separator(spaces, before, after)
        out.append(sep)
        out_len += len(sep)
        for m in run:
            tags.extend(_parse_tag(m.group(0), m.start(), out_len))
        cursor = end
    out.append(text[cursor:])
    joined = "".join(out)
    lead = len(joined) - len(joined.lstrip())
    clean = joined.strip()
    tags = [t.moved(min(max(0, t.position - lead), len(clean))) for t in tags]
    return clean, tags


def _only_space(s: str) -> bool:
    return not s or s.isspace()


def _separator(spaces: str, before: str, after: str) -> str:
    if after in CLOSING_PUNCTUATION or before in OPENING_PUNCTUATION:
        return "\n" if "\n" in spaces else ""  # "funny <Laughter>, right" -> "funny, right"
    if spaces:
        return "\n" if "\n" in spaces else " "
    if before and after and _spaced_word_char(before) and _spaced_word_char(after):
        return " "
    return ""


def _spaced_word_char(ch: str) -> bool:
    return ch.isalnum() and not is_unspaced_char(ch)


def _parse_tag(raw: str, offset: int, position: int) -> list[EditTag]:
    body = raw.strip()[1:-1]
    tags = []
    for part in body.split(PIPE):
        if not part.strip():
            continue  # "<Laughter|>" : an empty pipe field asks for nothing
        kind, value, iterations = _parse_part(part, raw, offset)
        tags.append(EditTag(kind, value, iterations, position, raw, offset))
    if not tags:
        raise EditTagError(f"Empty tag {raw!r} at character {offset}; remove it.", tag=raw, offset=offset)
    return tags


def _parse_part(part: str, raw: str, offset: int) -> tuple[str, str | None, int]:
    fields = [f.strip() for f in part.split(FIELD_SEPARATOR)]
    head = fields[0].lower()
    where = f"in tag {raw!r} at character {offset}"
    if head in EDIT_VALUES:  # emotion / style / speed
        if len(fields) < 2 or not fields[1]:
            raise EditTagError(
                f"The {head} tag needs a value {where}: write <{head}:VALUE>, VALUE one of "
                f"{', '.join(EDIT_VALUES[head])}.", tag=raw, offset=offset,
            )
        value = _checked_value(head, fields[1], raw, offset)
        return head, value, _iterations(fields[2:], raw, offset)
    if head in VALUELESS_KINDS:
        return head, None, _iterations(fields[1:], raw, offset)
    if head == PARALINGUISTIC:
        if len(fields) < 2 or not fields[1]:
            raise EditTagError(
                f"The paralinguistic tag needs a sound {where}: e.g. <laugh> or <paralinguistic:laugh>.",
                tag=raw, offset=offset,
            )
        return PARALINGUISTIC, _sound(fields[1], raw, offset), _iterations(fields[2:], raw, offset)
    sound = canonical_paralinguistic_tag(fields[0])
    if sound is not None:
        return PARALINGUISTIC, sound, _iterations(fields[1:], raw, offset)
    raise _unknown_tag(fields[0], raw, offset)


def _checked_value(kind: str, value: str, raw: str, offset: int) -> str:
    try:
        checked = check_edit_value(kind, value)
    except VocabularyError as err:
        spelled = value.replace("_", " ") if kind == "speed" else value
        guess = closest(spelled, EDIT_VALUES[kind])
        raise EditTagError(
            f"In tag {raw!r} at character {offset}: {err}",
            tag=raw, offset=offset, suggestion=f"<{kind}:{guess}>" if guess else None,
        ) from err
    assert checked is not None
    return checked


def _closest_sound(name: str) -> str | None:
    """The current spelling of the accepted sound spelling nearest to ``name`` (aliases included)."""
    guess = closest(name.replace("_", " "), ALL_PARALINGUISTIC_SPELLINGS)
    return canonical_paralinguistic_tag(guess) if guess else None


def _sound(name: str, raw: str, offset: int) -> str:
    sound = canonical_paralinguistic_tag(name)
    if sound is None:
        guess = _closest_sound(name)
        hint = f" Did you mean <{guess}>?" if guess else ""
        raise EditTagError(
            f"Unknown sound {name!r} in tag {raw!r} at character {offset}.{hint} "
            f"Valid sounds: {', '.join(PARALINGUISTIC_TAGS)}.",
            tag=raw, offset=offset, suggestion=f"<{guess}>" if guess else None,
        )
    return sound


def _iterations(rest: Sequence[str], raw: str, offset: int) -> int:
    if not rest:
        return DEFAULT_ITERATIONS
    if len(rest) > 1:
        raise EditTagError(
            f"Too many ':' fields in tag {raw!r} at character {offset}: the forms are <emotion:VALUE:N>, "
            "<denoise:N> and <Laughter:N>.", tag=raw, offset=offset,
        )
    field = rest[0]
    if not field.isdigit() or not MIN_ITERATIONS <= int(field) <= MAX_EDIT_ITERATIONS:
        raise EditTagError(
            f"Iterations {field!r} in tag {raw!r} at character {offset} must be a whole number from "
            f"{MIN_ITERATIONS} to {MAX_EDIT_ITERATIONS}.", tag=raw, offset=offset,
        )
    return int(field)


def _unknown_tag(name: str, raw: str, offset: int) -> EditTagError:
    lowered = name.strip().lower()
    if lowered in _FOREIGN_TAGS:
        return EditTagError(
            f"Tag {raw!r} at character {offset} is {_FOREIGN_TAGS[lowered]}, not a Step-Audio-EditX edit; "
            "remove it.", tag=raw, offset=offset,
        )
    suggestion = _bare_value_suggestion(lowered)
    if suggestion is None:
        sounds = {t.lower(): canonical_paralinguistic_tag(t) for t in ALL_PARALINGUISTIC_SPELLINGS}
        kinds = {k: k for k in EDIT_TYPES if k != PARALINGUISTIC}
        guess = closest(lowered.replace("_", " "), list(sounds) + list(kinds))
        if guess is not None:
            suggestion = f"<{sounds[guess]}>" if guess in sounds else (
                f"<{guess}>" if guess in VALUELESS_KINDS else f"<{guess}:VALUE>"
            )
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    return EditTagError(
        f"Unknown tag {raw!r} at character {offset}.{hint} Tags: <emotion:VALUE>, <style:VALUE>, "
        f"<speed:VALUE>, <denoise>, <vad> and the sounds {', '.join('<' + t + '>' for t in PARALINGUISTIC_TAGS)} "
        "(each with an optional :N for 1-5 iterations). Write literal angle brackets as words.",
        tag=raw, offset=offset, suggestion=suggestion,
    )


def _bare_value_suggestion(lowered: str) -> str | None:
    """``<happy>`` -> ``<emotion:happy>``, ``<whisper>`` -> ``<style:whisper>``, ``<faster>`` -> ``<speed:faster>``."""
    key = lowered.replace("-", "_").replace(" ", "_")
    if key in EMOTIONS:
        return f"<emotion:{key}>"
    if key in STYLES:
        return f"<style:{key}>"
    try:
        return f"<speed:{normalize_speed(lowered)}>"
    except VocabularyError:
        return None


# --- order and rendering ----------------------------------------------------------------------------
def edit_priority(kind: str) -> int:
    """Rank of an edit kind in :data:`EDIT_PRIORITY` (lower runs first)."""
    try:
        return EDIT_PRIORITY.index(kind)
    except ValueError:
        raise EditTagError(f"Unknown edit kind {kind!r}; kinds: {', '.join(EDIT_PRIORITY)}.", tag=kind, offset=-1) from None


def sort_by_priority(tags: Iterable[EditTag]) -> list[EditTag]:
    """Tags in application order: by :data:`EDIT_PRIORITY`, then as written (stable)."""
    return sorted(tags, key=lambda t: edit_priority(t.kind))


def plan_edit_steps(tags: Iterable[EditTag]) -> list[EditStep]:
    """The chain of single-intent model calls for the tags of one text, in priority order.

    Every emotion / style / speed / denoise / vad tag is its own step (the model was trained on one
    instruction per call; repeated kinds run in the order written). All sounds of the text form ONE
    last step (the official paralinguistic edit inserts every ``[Tag]`` of the new text at once),
    run for the largest iteration count among them.
    """
    ordered = sort_by_priority(tags)
    steps = [EditStep(t.kind, t.value, t.iterations, (t,)) for t in ordered if t.kind != PARALINGUISTIC]
    sounds = tuple(t for t in ordered if t.kind == PARALINGUISTIC)
    if sounds:
        steps.append(EditStep(PARALINGUISTIC, None, max(t.iterations for t in sounds), sounds))
    return steps


def render_paralinguistic_text(clean_text: str, tags: Iterable[EditTag]) -> str:
    """``clean_text`` with each sound tag written as the official ``[tag]`` at its position.

    This is the ``new_text`` of a paralinguistic edit, in the current spelling (the prompt builder
    rewrites it for the weights in use). In spaced scripts the mark is set off by single spaces
    (``Hello [laugh] world``, none before closing punctuation: ``funny [laugh], right``); in Chinese /
    Japanese it is written inline (``很好，[laugh]我们``). Several sounds at one position keep their written order.
    Non-paralinguistic tags are ignored.
    """
    sounds = [t for t in tags if t.kind == PARALINGUISTIC]
    by_position: dict[int, list[EditTag]] = {}
    for t in sounds:
        if not 0 <= t.position <= len(clean_text):
            raise EditTagError(
                f"Tag {t.source or t.value!r} has position {t.position} outside the text (0..{len(clean_text)}).",
                tag=t.source or str(t.value), offset=t.source_offset,
            )
        by_position.setdefault(t.position, []).append(t)
    text = clean_text
    for position in sorted(by_position, reverse=True):
        spaced = _spaced_context(clean_text, position)
        label = (" " if spaced else "").join(f"[{t.value}]" for t in by_position[position])
        if spaced:
            if position > 0 and not text[position - 1].isspace() and text[position - 1] not in OPENING_PUNCTUATION:
                label = " " + label
            if position < len(text) and not text[position].isspace() and text[position] not in CLOSING_PUNCTUATION:
                label = label + " "
        text = text[:position] + label + text[position:]
    return text


def _spaced_context(text: str, position: int) -> bool:
    """Whether the text around ``position`` is written with spaces between words."""
    for ch in reversed(text[:position]):
        if not ch.isspace():
            return not is_unspaced_char(ch)
    for ch in text[position:]:
        if not ch.isspace():
            return not is_unspaced_char(ch)
    return True


def strip_edit_tags(text: str) -> str:
    """``text`` without its inline tags (validated); shorthand for ``parse_edit_tags(text)[0]``."""
    return parse_edit_tags(text)[0]
