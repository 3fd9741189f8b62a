"""Long clone text -> chunks the model can speak in one call, with pauses between them.

``segment_text(text)`` returns, in reading order, :class:`TextChunk` items (clean text to clone, its
edit tags with positions re-based to the chunk, the dynamic token cap) and :class:`Pause` items
(explicit silences from ``[pause:500ms]`` / ``[pause:1.5s]`` / ``[pause:2]`` markers).

How a text is cut:

1. inline edit tags are parsed out first (``edit_tags.parse_edit_tags``), so a cut can never fall
   inside a tag; pause markers split the text into pieces;
2. each piece is cut at sentence ends (``. ! ? …`` followed by a space or the end, ``。！？`` anywhere,
   line breaks) and consecutive sentences are grouped while the chunk's token cap
   (``estimate_clone_tokens``: a slow reading plus margin) stays within ``max_seconds`` of audio
   (30 s by default, the longest input the model edits);
3. a sentence that alone is too long is cut at clause marks (``, ; : 、 ，``), then between words,
   then (unspaced scripts) between characters, never inside a ``[Laughter]``-style mark.

A dialect prefix (``[Sichuanese]`` ...) at the start of the text is repeated at the start of every chunk.

Tags: a paralinguistic tag goes to the chunk that holds its position. Tag positions point at the
start of the text that follows the tag, so a sound written between two sentences that end up in
different chunks opens the later chunk; one written just before a pause marker (or at the very end)
closes the earlier chunk. The other kinds (emotion, style, speed, denoise, vad) describe the
whole text in TTS-Audio-Suite's syntax ("position doesn't matter"), so with ``tag_scope="text"``
(default) every chunk gets them; with ``tag_scope="chunk"`` each goes only to the chunk it was
written in (after the end of a chunk's text counts as that chunk).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from ...engines.step_audio_editx.constants import MAX_INPUT_SECONDS
from ...engines.step_audio_editx.token_budget import estimate_clone_tokens, is_unspaced_char, seconds_to_tokens
from ...engines.step_audio_editx.vocabulary import (
    DIALECT_PATTERN,
    PARALINGUISTIC_BRACKET_PATTERN,
    PAUSE_PATTERN,
    VocabularyError,
    pause_seconds,
)
from .edit_tags import EditTag, parse_edit_tags

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHUNK_SECONDS = MAX_INPUT_SECONDS
TAG_SCOPES: tuple[str, ...] = ("text", "chunk")

# Sentence ends: Latin marks count when a space, the end, or an unspaced-script character follows
# (so "3.14" and "e.g.x" do not cut); full-width marks always count. Closing quotes stay attached.
_SENTENCE_END = re.compile(r"(?:[.!?…‥]+|[。！？]+)[\"'”’)\]」』）】》]*")
_CLAUSE_END = re.compile(r"(?:[,;:]+|[，；：、]+|—+)[\"'”’)\]」』）】》]*")
_FULL_WIDTH_ENDS = frozenset("。！？，；：、")


class SegmentError(ValueError):
    """A text that cannot be segmented as written (bad pause marker, bad argument)."""


@dataclass(frozen=True)
class TextChunk:
    """One clone call: ``text`` to speak, its ``tags`` (positions in ``text``) and the token cap.

    ``start`` / ``end``: the span of the chunk's words in the parsed clean text (diagnostics).
    """

    text: str
    tags: tuple[EditTag, ...]
    max_new_tokens: int
    start: int
    end: int


@dataclass(frozen=True)
class Pause:
    """Silence between chunks, in seconds."""

    seconds: float


Segment = TextChunk | Pause


def segment_text(
    text: str,
    *,
    max_seconds: float = DEFAULT_MAX_CHUNK_SECONDS,
    tag_scope: str = "text",
) -> list[Segment]:
    """Cut ``text`` (inline tags and pause markers allowed) into chunks and pauses, in order.

    Every chunk's ``max_new_tokens`` is at most ``max_seconds`` of audio (whole 5-token groups).
    Adjacent pauses are merged. Raises ``EditTagError`` for bad tags and :class:`SegmentError` for
    bad pause markers or arguments.
    """
    if tag_scope not in TAG_SCOPES:
        raise SegmentError(f"tag_scope must be one of {', '.join(TAG_SCOPES)}, got {tag_scope!r}.")
    budget = seconds_to_tokens(max_seconds)
    clean, tags = parse_edit_tags(text)

    prefix = ""
    body_start = 0
    dialect = DIALECT_PATTERN.match(clean)
    if dialect:
        body_start = dialect.end()
        while body_start < len(clean) and clean[body_start].isspace():
            body_start += 1
        prefix = clean[:body_start]
    if estimate_clone_tokens(prefix + "x") > budget:
        raise SegmentError(f"max_seconds={max_seconds} is too short for any speech; use at least a few seconds.")

    def fits(start: int, end: int) -> bool:
        return estimate_clone_tokens(prefix + clean[start:end]) <= budget

    items: list[tuple[int, int] | Pause] = []
    cursor = body_start
    for marker in PAUSE_PATTERN.finditer(clean, body_start):
        items.extend(_chunk_piece(clean, cursor, marker.start(), fits))
        try:
            seconds = pause_seconds(marker.group(0))
        except VocabularyError as err:
            raise SegmentError(f"{err} (at character {marker.start()} of the text without tags)") from err
        if items and isinstance(items[-1], Pause):
            items[-1] = Pause(items[-1].seconds + seconds)
        else:
            items.append(Pause(seconds))
        cursor = marker.end()
    items.extend(_chunk_piece(clean, cursor, len(clean), fits))

    spans = [it for it in items if isinstance(it, tuple)]
    if tags and not spans:
        logger.warning("The text has edit tags but no words to speak; the tags %s are dropped.",
                       ", ".join(sorted({t.source for t in tags})))
    per_chunk = _assign_tags(tags, spans, tag_scope, len(prefix))
    out: list[Segment] = []
    k = 0
    for it in items:
        if isinstance(it, Pause):
            out.append(it)
            continue
        start, end = it
        chunk_text = prefix + clean[start:end]
        out.append(TextChunk(chunk_text, tuple(per_chunk[k]), estimate_clone_tokens(chunk_text), start, end))
        k += 1
    return out


def text_chunks(segments: list[Segment]) -> list[TextChunk]:
    """Only the chunks of :func:`segment_text`'s result (what a batch clone takes)."""
    return [s for s in segments if isinstance(s, TextChunk)]


# --- cutting ---------------------------------------------------------------------------------------
def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _chunk_piece(text: str, start: int, end: int, fits: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    start, end = _strip_span(text, start, end)
    if start >= end:
        return []
    return _group(text, _cut(text, start, end, _sentence_cuts), fits, level=0)


def _group(text: str, spans: list[tuple[int, int]], fits, level: int) -> list[tuple[int, int]]:
    """Greedy: extend the current chunk by the next span while the chunk still fits."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for span in spans:
        if current is not None and fits(current[0], span[1]):
            current = (current[0], span[1])
            continue
        if current is not None:
            out.append(current)
            current = None
        if fits(*span):
            current = span
        else:
            out.extend(_split_oversized(text, span, fits, level))
    if current is not None:
        out.append(current)
    return out


def _split_oversized(text: str, span: tuple[int, int], fits, level: int) -> list[tuple[int, int]]:
    finers = (_clause_cuts, _word_cuts)
    for depth in range(level, len(finers)):
        pieces = _cut(text, span[0], span[1], finers[depth])
        if len(pieces) > 1:
            return _group(text, pieces, fits, depth + 1)
    return _character_split(text, span, fits)


def _cut(text: str, start: int, end: int, cuts: Callable[[str, int, int], list[int]]) -> list[tuple[int, int]]:
    """Spans between cut points, whitespace-stripped, empty ones dropped."""
    bounds = [start, *cuts(text, start, end), end]
    spans = []
    for a, b in itertools.pairwise(bounds):
        a, b = _strip_span(text, a, b)
        if a < b:
            spans.append((a, b))
    return spans


def _mark_cuts(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[int]:
    cuts = []
    for m in pattern.finditer(text, start, end):
        after = m.end()
        full_width = any(ch in _FULL_WIDTH_ENDS for ch in m.group(0))
        ends_sentence = full_width or after >= end or text[after].isspace() or is_unspaced_char(text[after])
        if ends_sentence and start < after < end:
            cuts.append(after)
    return cuts


def _sentence_cuts(text: str, start: int, end: int) -> list[int]:
    cuts = set(_mark_cuts(_SENTENCE_END, text, start, end))
    cuts.update(i + 1 for i in range(start, end) if text[i] == "\n" and start < i + 1 < end)
    return sorted(cuts)


def _clause_cuts(text: str, start: int, end: int) -> list[int]:
    return _mark_cuts(_CLAUSE_END, text, start, end)


def _word_cuts(text: str, start: int, end: int) -> list[int]:
    return [i for i in range(start + 1, end) if text[i].isspace() and not text[i - 1].isspace()]


def _character_split(text: str, span: tuple[int, int], fits) -> list[tuple[int, int]]:
    """Last resort for unbroken text: the longest fitting prefix, found by bisection, repeatedly."""
    protected = [(m.start(), m.end()) for m in PARALINGUISTIC_BRACKET_PATTERN.finditer(text, span[0], span[1])]

    def allowed(cut: int) -> bool:
        return not any(a < cut < b for a, b in protected)

    out = []
    start, end = span
    while start < end:
        if fits(start, end):
            out.append((start, end))
            break
        lo, hi = start + 1, end  # fits(start, lo) is assumed: one character always fits the budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(start, mid):
                lo = mid
            else:
                hi = mid - 1
        cut = lo
        while cut > start + 1 and not allowed(cut):
            cut -= 1
        if not allowed(cut):  # a mark longer than the budget: keep it whole
            cut = next(b for a, b in protected if a < cut < b)
        a, b = _strip_span(text, start, cut)
        if a < b:
            out.append((a, b))
        start, _ = _strip_span(text, cut, end)
    return out


# --- tags ------------------------------------------------------------------------------------------
def _assign_tags(tags: list[EditTag], spans: list[tuple[int, int]], scope: str, prefix_len: int) -> list[list[EditTag]]:
    per_chunk: list[list[EditTag]] = [[] for _ in spans]
    if not spans:
        return per_chunk

    def rebased(tag: EditTag, k: int) -> EditTag:
        start, end = spans[k]
        return tag.moved(prefix_len + min(max(tag.position - start, 0), end - start))

    for tag in tags:
        if not tag.is_positional and scope == "text":
            for k in range(len(spans)):
                per_chunk[k].append(rebased(tag, k))
            continue
        k = _owner(tag.position, spans, at_start_goes_back=not tag.is_positional)
        per_chunk[k].append(rebased(tag, k))
    return per_chunk


def _owner(position: int, spans: list[tuple[int, int]], at_start_goes_back: bool) -> int:
    """The chunk a position belongs to: the one holding it, else the one before the gap, else the first.

    With ``at_start_goes_back`` a position at the very start of a chunk (after the previous one's
    text and the whitespace between) belongs to the previous chunk.
    """
    for k, (start, end) in enumerate(spans):
        if start <= position <= end:
            return k - 1 if (position == start and at_start_goes_back and k > 0) else k
        if position < start:
            return max(k - 1, 0)
    return len(spans) - 1
