"""Where to cut a long clip: at word boundaries from the recognised timestamps, preferring pauses, into
pieces of at most ``MAX_INPUT_SECONDS`` (the longest clip the model edits).

Rules: a cut lies between two words (never inside one); each piece is at most ``max_piece_s`` long;
the rest of the clip aims at the fewest pieces, of equal length (the target); among the boundaries at
least ``PREFERRED_FILL`` of the target into the piece, the longest pause wins (pauses of
``PAUSE_BONUS_SECONDS`` or more count as equal), then the one nearest the target; inside a pause the cut
goes to the quietest 10 ms. A clip without recognised words (music, noise) is cut at the quietest point of each window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import math

import torch

from ..asr.text import Word
from ..constants import MAX_INPUT_SECONDS, MIN_INPUT_SECONDS

PREFERRED_FILL = 0.5  # prefer cuts that leave pieces at least half the maximum long
ENERGY_HOP_SECONDS = 0.01  # the quietest point of a pause is searched on 10 ms frames
PAUSE_BONUS_SECONDS = 0.15  # pauses this long or longer beat shorter ones regardless of position
MIN_PIECE_SECONDS = MIN_INPUT_SECONDS  # no piece shorter than the model's minimum input


@dataclass(frozen=True)
class Cut:
    """One cut point (seconds) and the pause it sits in (0 for adjacent words)."""

    time: float
    pause: float
    after_word: int  # index of the last word before the cut (-1 when no words)


@dataclass(frozen=True)
class PiecePlan:
    """A piece of the clip: ``[start, end)`` seconds and the words ``[first_word, end_word)`` it holds."""

    start: float
    end: float
    first_word: int
    end_word: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def frame_energy(wav: torch.Tensor, sample_rate: int, hop_s: float = ENERGY_HOP_SECONDS) -> torch.Tensor:
    """Mean square per ``hop_s`` frame of a mono clip."""
    hop = max(int(round(hop_s * sample_rate)), 1)
    n = wav.shape[-1] // hop
    if n == 0:
        return torch.zeros(1)
    return wav[: n * hop].reshape(n, hop).float().pow(2).mean(dim=1)


def _quietest(energy: torch.Tensor, lo: float, hi: float, hop_s: float) -> float:
    a, b = int(lo / hop_s), max(int(hi / hop_s), int(lo / hop_s) + 1)
    a, b = max(a, 0), min(b, energy.shape[0])
    if b <= a:
        return (lo + hi) / 2
    k = int(torch.argmin(energy[a:b]))
    return min(max((a + k + 0.5) * hop_s, lo), hi)


def word_boundaries(words: Sequence[Word], energy: torch.Tensor, hop_s: float = ENERGY_HOP_SECONDS) -> list[Cut]:
    """Every allowed cut: between word i and i+1, at the quietest point of the gap between them."""
    cuts = []
    for i in range(len(words) - 1):
        lo, hi = words[i].end, max(words[i + 1].start, words[i].end)
        t = _quietest(energy, lo, hi, hop_s) if hi > lo else lo
        cuts.append(Cut(t, hi - lo, i))
    return cuts


def plan_pieces(words: Sequence[Word], duration: float, energy: torch.Tensor,
                max_piece_s: float = MAX_INPUT_SECONDS, hop_s: float = ENERGY_HOP_SECONDS) -> list[PiecePlan]:
    """Cut ``[0, duration)`` into pieces of at most ``max_piece_s`` (see the module doc)."""
    if duration <= max_piece_s:
        return [PiecePlan(0.0, duration, 0, len(words))]
    candidates = word_boundaries(words, energy, hop_s)
    pieces: list[PiecePlan] = []
    start, first = 0.0, 0
    while duration - start > max_piece_s:
        limit = min(start + max_piece_s, duration - MIN_PIECE_SECONDS)
        target = start + (duration - start) / math.ceil((duration - start) / max_piece_s)
        usable = [c for c in candidates if start + MIN_PIECE_SECONDS <= c.time <= limit and c.after_word >= first]
        preferred = [c for c in usable if c.time >= start + PREFERRED_FILL * (target - start)]
        pool = preferred or usable
        if pool:
            best = max(pool, key=lambda c: (round(min(c.pause, PAUSE_BONUS_SECONDS) / ENERGY_HOP_SECONDS),
                                            -abs(c.time - target)))  # pauses compared to 10 ms
            cut, end_word = best.time, best.after_word + 1
        else:  # no word boundary in reach (no speech recognised, or one very long word): quietest point
            lo = start + PREFERRED_FILL * (target - start)
            cut = _quietest(energy, lo, limit, hop_s)
            end_word = first
            while end_word < len(words) and words[end_word].end <= cut:
                end_word += 1
        pieces.append(PiecePlan(start, cut, first, end_word))
        start, first = cut, end_word
    pieces.append(PiecePlan(start, duration, first, len(words)))
    return pieces
