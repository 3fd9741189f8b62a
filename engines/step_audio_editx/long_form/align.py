"""Split a typed transcript (or a tagged paralinguistic text) into the pieces of a long clip.

The typed text and the recognised words are compared unit by unit (an English word or number, or one
CJK character; case and punctuation ignored). Matched units anchor the typed text to the audio;
unmatched ones follow their neighbours. A piece boundary after recognised word ``j`` becomes the start
of the first typed unit anchored after ``j``, so punctuation and ``[Tags]`` stay with the words before
them. With no match at all the text is split in proportion to the recognised words per piece.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

_CJK = "\u3400-\u9fff\uf900-\ufaff"
_UNIT = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*")  # one CJK character, or a word / number
_BRACKETS = re.compile(r"\[[^\[\]]*\]|<[^<>]*>")  # tags are not words: they never anchor or split


def units(text: str) -> list[tuple[str, int]]:
    """(normalised unit, start offset) of every word unit of ``text``, tags skipped."""
    masked = _BRACKETS.sub(lambda m: " " * len(m.group(0)), text)
    return [(m.group(0).lower(), m.start()) for m in _UNIT.finditer(masked)]


def _expand(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """Recognised words -> units, with the word index of each unit."""
    flat, owner = [], []
    for i, w in enumerate(words):
        for u, _ in units(w):
            flat.append(u)
            owner.append(i)
    return flat, owner


def split_text(text: str, recognised_words: Sequence[str], word_cuts: Sequence[int]) -> list[str]:
    """``text`` cut into ``len(word_cuts) + 1`` parts; ``word_cuts[k]`` = index of the first recognised word
    of piece ``k + 1``."""
    typed = units(text)
    if not word_cuts:
        return [text.strip()]
    rec, owner = _expand(recognised_words)
    anchor = [None] * len(typed)  # recognised word index of each typed unit
    matcher = difflib.SequenceMatcher(a=[u for u, _ in typed], b=rec, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            anchor[block.a + k] = owner[block.b + k]
    known = [i for i, a in enumerate(anchor) if a is not None]
    if not known:  # nothing in common: proportional to the recognised words
        total = max(len(recognised_words), 1)
        anchor = [int(i * total / max(len(typed), 1)) for i in range(len(typed))]
    else:
        for i in range(len(typed)):  # unmatched units: interpolate between matched neighbours
            if anchor[i] is None:
                prev = max((k for k in known if k < i), default=None)
                nxt = min((k for k in known if k > i), default=None)
                if prev is None:
                    anchor[i] = anchor[nxt]
                elif nxt is None:
                    anchor[i] = anchor[prev]
                else:
                    span = anchor[nxt] - anchor[prev]
                    anchor[i] = anchor[prev] + span * (i - prev) / (nxt - prev)
    offsets = []
    for cut in word_cuts:
        at = next((pos for (u, pos), a in zip(typed, anchor) if a >= cut), len(text))
        offsets.append(max(at, offsets[-1] if offsets else 0))
    bounds = [0] + offsets + [len(text)]
    return [text[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:])]
