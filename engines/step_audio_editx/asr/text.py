"""Recognised tokens -> text, the way FunASR's ``sentence_postprocess`` writes it, and -> timed words.

Rules (tokens.json pieces of the zh / yue / en Paraformer):

* ``<s> </s> <unk> <OOV>`` are dropped.
* A piece ending in ``@@`` continues an English word; any other alphabetic piece ends one.
* All-CJK output is joined without spaces; all-English output puts one space between words; mixed
  output puts a space after an English word unless a CJK character follows.
* Runs of single letters (``a b c``) become one upper-case abbreviation (``ABC``).

Digits and ``@`` count as CJK, as in FunASR.
"""

from __future__ import annotations

from dataclasses import dataclass

DROPPED_PIECES = ("<s>", "</s>", "<unk>", "<OOV>")
_CLEAN_ORDER = (" ", "</s>", "<s>", "<unk>", "<OOV>")  # FunASR removes these from a piece, in this order
CONTINUATION = "@@"
CJK_FIRST, CJK_LAST = "\u4e00", "\u9fff"


def _is_chinese(s: str) -> bool:
    """FunASR's ``isChinese``: string comparisons, so a multi-character piece is judged lexicographically."""
    return CJK_FIRST <= s <= CJK_LAST or "0" <= s <= "9" or s == "@"


def _clean(piece: str) -> str:
    for junk in _CLEAN_ORDER:
        piece = piece.replace(junk, "")
    return piece


def _all_chinese(word: str | list[str]) -> bool:
    """FunASR's ``isAllChinese`` over a piece list, or over the characters of one piece."""
    cleaned = [_clean(p) for p in word]
    return bool(cleaned) and all(_is_chinese(c) for c in cleaned)


def _all_alpha(word: str | list[str]) -> bool:
    """FunASR's ``isAllAlpha`` (letters or apostrophes, none of them CJK) over pieces or characters."""
    cleaned = [_clean(p) for p in word]
    return bool(cleaned) and all((c.isalpha() or c == "'") and not (c.isalpha() and _is_chinese(c)) for c in cleaned)


def _merge_abbreviations(items: list[str]) -> list[str]:
    """``["a", " ", "b", " ", "c", " "]`` -> ``["ABC", " "]``: runs of single ASCII letters separated by spaces."""
    def letter(k: int) -> bool:
        return 0 <= k < len(items) and len(items[k]) == 1 and items[k].encode("utf-8").isalpha()

    out: list[str] = []
    k = 0
    while k < len(items):
        if letter(k) and k + 2 < len(items) and items[k + 1] == " " and letter(k + 2):
            end = k + 2
            while end + 2 < len(items) and items[end + 1] == " " and letter(end + 2):
                end += 2
            out.append("".join(items[i] for i in range(k, end + 1) if items[i] != " ").upper())
            k = end + 1
        else:
            out.append(items[k])
            k += 1
    return out


def word_items(pieces: list[str]) -> list[tuple[str, list[int]]]:
    """Pieces -> the ordered output items (words, CJK characters, spaces) with the piece indices each holds."""
    kept = [(i, p) for i, p in enumerate(pieces) if p not in DROPPED_PIECES]
    words = [p for _, p in kept]
    if _all_chinese(words):
        return [(p.replace(" ", ""), [i]) for i, p in kept]
    items: list[tuple[str, list[int]]] = []
    buffer, owners = "", []
    if _all_alpha(words):
        for i, p in kept:
            if CONTINUATION in p:
                buffer, owners = buffer + p.replace(CONTINUATION, ""), owners + [i]
            else:
                items += [(buffer + p, owners + [i]), (" ", [])]
                buffer, owners = "", []
        return items
    alpha_blank = False
    for i, p in kept:
        if _all_chinese(p):
            if alpha_blank:
                items.pop()
            items.append((p, [i]))
            alpha_blank = False
        elif CONTINUATION in p:
            buffer, owners = buffer + p.replace(CONTINUATION, ""), owners + [i]
            alpha_blank = False
        elif _all_alpha(p):
            items += [(buffer + p, owners + [i]), (" ", [])]
            buffer, owners = "", []
            alpha_blank = True
        else:
            items.append((p, [i]))
    return items


def postprocess(pieces: list[str]) -> str:
    """FunASR's text for a token sequence (``sentence_postprocess`` without timestamps)."""
    items = word_items(pieces)
    merged = _merge_abbreviations([w for w, _ in items])
    return "".join(merged).strip()


@dataclass(frozen=True)
class Word:
    """One recognised word (an English word or one CJK character) and when it was spoken, in seconds."""

    text: str
    start: float
    end: float
    first_token: int
    last_token: int


def timed_words(pieces: list[str], spans: list[tuple[float, float]]) -> list[Word]:
    """Group pieces into words in spoken order: a piece ending in ``@@`` opens an English word that stays
    open (CJK pieces in between included, as the text rules join them) until an alphabetic piece closes it;
    every other piece is a word. These are the units a long clip may be cut between: never inside one."""
    words, first, open_word = [], None, False
    for k, piece in enumerate(pieces):
        first = k if first is None else first
        if piece.endswith(CONTINUATION):
            open_word = True
        elif open_word and _all_alpha(piece):
            open_word = False
        if open_word and k + 1 < len(pieces):
            continue
        text = "".join(p.replace(CONTINUATION, "") for p in pieces[first:k + 1] if p not in DROPPED_PIECES)
        if text.strip():
            words.append(Word(text, spans[first][0], spans[k][1], first, k))
        first, open_word = None, False
    return words
