"""Streaming CIF (continuous integrate-and-fire) over the encoder's chunk windows, as FunASR's
``CifPredictorV2.forward_chunk`` runs it, plus where each token fired.

Per chunk, FunASR takes the window's alphas, zeroes positions before ``chunk_size[0]`` and (except in the
final chunk) from ``chunk_size[0] + chunk_size[1]`` on (the look-ahead frames the next chunk decodes),
prepends the carry of the previous chunk and, in the final chunk, appends a silent frame of weight
``tail_threshold``. It then integrates: a token fires whenever the running sum reaches the threshold; its
embedding is the alpha-weighted sum of the frames it covered. The sums are float32, as in FunASR, so the
firing positions are the official ones bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CifChunk:
    """One chunk window of one clip: where its frames sit in the clip and whether it is the last call."""

    window_len: int  # valid window positions (context + own frames)
    first_frame: int  # clip LFR frame shown at window position 0 (negative: zero frames before the clip)
    final: bool


@dataclass
class CifResult:
    """Tokens fired over a clip. ``weights`` rows: (token, chunk, window position, weight) of every contribution."""

    token_chunk: np.ndarray  # [N] chunk in which token k fired (its decoder chunk)
    fire_frame: np.ndarray  # [N] clip LFR frame at which token k fired (the tail frame = number of frames)
    contrib_token: np.ndarray  # [M]
    contrib_chunk: np.ndarray  # [M]
    contrib_pos: np.ndarray  # [M]
    contrib_weight: np.ndarray  # [M] float32
    frame_alpha: np.ndarray  # [F] masked alpha of each clip frame as decoded (0 where no chunk decodes it)

    @property
    def num_tokens(self) -> int:
        return int(self.token_chunk.shape[0])


def valid_range(chunk: CifChunk, chunk_size: tuple[int, int, int]) -> tuple[int, int]:
    """Window positions whose alphas count: ``[chunk_size[0], chunk_size[0]+chunk_size[1])``, all if final."""
    lo = chunk_size[0]
    hi = chunk.window_len if chunk.final else min(chunk.window_len, chunk_size[0] + chunk_size[1])
    return lo, max(lo, hi)


def integrate(
    alphas: np.ndarray,
    chunks: list[CifChunk],
    chunk_size: tuple[int, int, int],
    threshold: float,
    tail_threshold: float,
    num_frames: int,
) -> CifResult:
    """Run the chunked integrate-and-fire over one clip. ``alphas``: float32 ``[num_chunks, W]``."""
    thr = np.float32(threshold)
    integ = np.float32(0.0)
    pending: list[tuple[int, int, np.float32]] = []  # contributions of the token being integrated
    tok_chunk, fire_frame = [], []
    c_tok, c_chunk, c_pos, c_w = [], [], [], []
    frame_alpha = np.zeros(max(num_frames, 0), dtype=np.float32)

    def emit(g: int, frame: int) -> None:
        k = len(tok_chunk)
        for cg, cp, w in pending:
            c_tok.append(k)
            c_chunk.append(cg)
            c_pos.append(cp)
            c_w.append(w)
        pending.clear()
        tok_chunk.append(g)
        fire_frame.append(frame)

    for g, chunk in enumerate(chunks):
        lo, hi = valid_range(chunk, chunk_size)
        row = alphas[g]
        steps = [(p, np.float32(row[p])) for p in range(lo, hi)]
        for p, a in steps:
            f = chunk.first_frame + p
            if 0 <= f < num_frames:
                frame_alpha[f] = a
        if chunk.final:
            steps.append((-1, np.float32(tail_threshold)))  # the silent tail frame (no hidden contribution)
        for p, a in steps:
            frame = num_frames if p < 0 else chunk.first_frame + p
            if a + integ < thr:
                integ = np.float32(integ + a)
                if p >= 0:
                    pending.append((g, p, a))
            else:
                if p >= 0:
                    pending.append((g, p, np.float32(thr - integ)))
                emit(g, frame)
                integ = np.float32(np.float32(integ + a) - thr)
                if p >= 0 and integ > 0:
                    pending.append((g, p, integ))
        # the carry (integ and the pending sum) moves on to the next chunk unchanged
    return CifResult(
        token_chunk=np.asarray(tok_chunk, dtype=np.int64),
        fire_frame=np.asarray(fire_frame, dtype=np.int64),
        contrib_token=np.asarray(c_tok, dtype=np.int64),
        contrib_chunk=np.asarray(c_chunk, dtype=np.int64),
        contrib_pos=np.asarray(c_pos, dtype=np.int64),
        contrib_weight=np.asarray(c_w, dtype=np.float32),
        frame_alpha=frame_alpha,
    )
