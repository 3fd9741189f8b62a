"""Audio codes <-> language-model ids <-> decoder frames: the pure bookkeeping between stages.

* ``interleave``: vq02 codes (16.67 Hz) and vq06 codes (25 Hz) -> LM ids, 2 + 3 per 120 ms group,
  ragged tails dropped.
* ``regroup``: generated LM ids -> the decoder's dual-codebook frames at 25 Hz, three per group.
"""

from __future__ import annotations

from typing import Sequence

from ..constants import (
    AUDIO_TOKEN_OFFSET,
    DECODER_VQ02_PAD,
    TOKENS_PER_GROUP,
    VQ02_CODEBOOK_SIZE,
    VQ02_PER_GROUP,
    VQ06_FIRST_ID,
    VQ06_PER_GROUP,
)

# Appended (from the right) to a generated stream whose length is not a multiple of 5, in the
# decoder's code space (id - 65536): missing vq02 slots become 0, missing vq06 slots become code 0.
_TAIL_PAD = (0, 0, 0, VQ02_CODEBOOK_SIZE, VQ02_CODEBOOK_SIZE, VQ02_CODEBOOK_SIZE)


def interleave(vq02: Sequence[int], vq06: Sequence[int]) -> list[int]:
    """LM ids for speech: per group ``vq02[2i], vq02[2i+1], vq06[3i], vq06[3i+1], vq06[3i+2]``."""
    groups = min(len(vq02) // VQ02_PER_GROUP, len(vq06) // VQ06_PER_GROUP)
    ids: list[int] = []
    for g in range(groups):
        ids.extend(AUDIO_TOKEN_OFFSET + int(c) for c in vq02[g * VQ02_PER_GROUP:(g + 1) * VQ02_PER_GROUP])
        ids.extend(VQ06_FIRST_ID + int(c) for c in vq06[g * VQ06_PER_GROUP:(g + 1) * VQ06_PER_GROUP])
    return ids


def audio_token_string(ids: Sequence[int]) -> str:
    """The ``<audio_N>`` text form of LM audio ids (N = id - 65536), as written into prompts."""
    return "".join(f"<audio_{int(i) - AUDIO_TOKEN_OFFSET}>" for i in ids)


def regroup(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Decoder frames for generated LM audio ids: group ``[a,b,c,d,e]`` -> ``(a,c+1), (b,d+1), (1024,e+1)``.

    Works in the decoder's code space (id - 65536, so vq06 codes are 1024 + code). A ragged tail is
    padded the way the official decoder pads it; the result has ``3 * ceil(len/5)`` frames.
    """
    codes = [int(i) - AUDIO_TOKEN_OFFSET for i in ids]
    pad = (-len(codes)) % TOKENS_PER_GROUP
    if pad:
        codes.extend(_TAIL_PAD[-pad:])
    frames: list[tuple[int, int]] = []
    for g in range(0, len(codes), TOKENS_PER_GROUP):
        a, b, c, d, e = codes[g:g + TOKENS_PER_GROUP]
        frames.extend(((a, c + 1), (b, d + 1), (DECODER_VQ02_PAD, e + 1)))
    return frames
