"""Choosing the next audio token: constraints, the repetition guard, and seeded sampling.

Everything here works on a whole batch at once with tensor ops only (no host sync, no per-row Python),
so the same code runs inside the plain loop, a compiled decode step and a captured CUDA graph.

Randomness is counter-based: the noise for row r at generation step t and vocabulary id v is a hash of
(seed_r, t, v). A row therefore draws the same tokens whatever else is in the batch, on CPU or GPU, and
a request's seed alone fixes its output (sampling from softmax by the Gumbel-max trick is exact).

The logits may cover only some vocabulary ids (``vocab_ids``: e.g. <|EOT|> plus the audio ids when the
audio constraint is on, so the LM head computes 5,121 rows instead of 74,752). Every id outside that set
would be -inf under the constraint anyway, and the noise is keyed by the true id, so the choice is the
same as over the full vocabulary.
"""

from __future__ import annotations

import torch

from ..constants import (
    EOT_ID,
    REPETITION_MAX_COUNT,
    REPETITION_WINDOW,
    TOKENS_PER_GROUP,
    VQ02_FIRST_ID,
    VQ02_LAST_ID,
    VQ02_PER_GROUP,
    VQ06_FIRST_ID,
    VQ06_LAST_ID,
)
from ..types import SamplingConfig


_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_UNIFORM_BITS = 24


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    x = x + _signed(_GOLDEN)
    x = (x ^ _shr(x, 30)) * _signed(_MIX1)
    x = (x ^ _shr(x, 27)) * _signed(_MIX2)
    return x ^ _shr(x, 31)


def id_hashes(ids: torch.Tensor) -> torch.Tensor:
    """The per-id half of the noise hash, [V] int64 (a constant per vocabulary: precompute it once)."""
    return _splitmix64(ids.to(torch.int64))


def row_hashes(seeds: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
    """The per-(seed, step) half of the noise hash, [B] int64."""
    steps = torch.as_tensor(steps, device=seeds.device, dtype=torch.int64).expand(seeds.shape)
    return _splitmix64(_splitmix64(seeds.to(torch.int64)) ^ steps)


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor | int, vocab_size: int,
                  ids: torch.Tensor | None = None, hashed_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform (0, 1) noise [B, V] as a pure function of (seed, step, id): same on every device.

    ``seeds`` [B] int64; ``steps`` [B] (or one int for all rows). Columns are ids ``0..vocab_size-1``, or
    the ids in ``ids`` [V'] (then ``hashed_ids = id_hashes(ids)`` may be passed to skip recomputing it).
    """
    if hashed_ids is None:
        if ids is None:
            ids = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
        hashed_ids = id_hashes(ids)
    row = row_hashes(seeds, steps)  # [B]
    bits = _shr(_splitmix64(row[:, None] ^ hashed_ids[None, :]), 64 - _UNIFORM_BITS)
    return (bits.to(torch.float32) + 0.5) * (1.0 / (1 << _UNIFORM_BITS))


def audio_slot_masks(vocab_size: int, device: torch.device | str) -> torch.Tensor:
    """Boolean [TOKENS_PER_GROUP, V]: which ids may be emitted at each position of a 5-token group.

    Positions 0-1 take vq02 ids, 2-4 take vq06 ids; <|EOT|> is allowed only where a new group would
    start (position 0), so a clip always ends on a whole group.
    """
    masks = torch.zeros(TOKENS_PER_GROUP, vocab_size, dtype=torch.bool, device=device)
    masks[:VQ02_PER_GROUP, VQ02_FIRST_ID:VQ02_LAST_ID + 1] = True
    masks[VQ02_PER_GROUP:, VQ06_FIRST_ID:VQ06_LAST_ID + 1] = True
    masks[0, EOT_ID] = True
    return masks


def constrain_logits(logits: torch.Tensor, slot_masks: torch.Tensor, n_generated: torch.Tensor,
                     vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Set to -inf every id not allowed at each row's group position ([B, V] logits, [B] counts).

    <|EOT|> is also refused as the very first token: every output holds at least one group.
    With ``vocab_ids`` [V'] the logits' columns are those ids and ``slot_masks`` must be [5, V'] to match.
    """
    allowed = slot_masks[n_generated % TOKENS_PER_GROUP]  # [B, V]
    logits = logits.masked_fill(~allowed, float("-inf"))
    ids = torch.arange(logits.shape[-1], device=logits.device) if vocab_ids is None else vocab_ids
    first = (n_generated == 0).unsqueeze(-1) & (ids == EOT_ID)
    return logits.masked_fill(first, float("-inf"))


def repetition_guard(logits: torch.Tensor, history: torch.Tensor, vocab_ids: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """The official guard: ban the last id when it occurs more than once in the last 10 ids.

    ``history`` [B, >=10] holds each row's most recent ids (prompt included), newest last; a negative
    entry means "no token yet" (a row whose window is not full is not guarded, as in the official
    processor). With ``vocab_ids`` [V'] the logits' columns are those ids.
    """
    if history.shape[1] < REPETITION_WINDOW:
        return logits  # as the official processor: no guard until the window is full
    window = history[:, -REPETITION_WINDOW:]
    last = window[:, -1:]
    repeated = (window == last).sum(dim=1, keepdim=True) > REPETITION_MAX_COUNT  # [B, 1]
    repeated = repeated & (window >= 0).all(dim=1, keepdim=True)
    if vocab_ids is None:
        ban = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, last.clamp(min=0), repeated)
    else:
        ban = (vocab_ids[None, :] == last) & repeated
    return logits.masked_fill(ban, float("-inf"))


def top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the ``top_k`` best ids (0 = all) and the smallest set whose mass reaches ``top_p``; [B, V]."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop ids once the mass BEFORE them already reaches top_p (the best id always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


_top_k_top_p = top_k_top_p  # the name the first version used


def inverse_temperature(config: SamplingConfig) -> float:
    """Logits are scaled by multiplying with this float32-rounded reciprocal, never divided: torch divides a
    CUDA tensor by a scalar that way but a CPU tensor exactly, and the fused kernel must match both."""
    return 1.0 / config.temperature


def masked_logits(logits: torch.Tensor, config: SamplingConfig, n_generated: torch.Tensor,
                  history: torch.Tensor | None = None, slot_masks: torch.Tensor | None = None,
                  vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
    """float32 logits [B, V] with the repetition guard and the audio constraint applied (-inf = banned)."""
    logits = logits.float()
    if config.repetition_guard:
        if history is None:
            raise ValueError("the repetition guard needs the recent token history")
        logits = repetition_guard(logits, history, vocab_ids)
    if config.constrain_audio:
        if slot_masks is None:
            raise ValueError("the audio constraint needs slot masks (audio_slot_masks)")
        logits = constrain_logits(logits, slot_masks, n_generated, vocab_ids)
    return logits


def select_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    seeds: torch.Tensor,
    n_generated: torch.Tensor,
    history: torch.Tensor | None = None,
    slot_masks: torch.Tensor | None = None,
    vocab_ids: torch.Tensor | None = None,
    hashed_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next ids [B] from last-position logits [B, V].

    ``n_generated`` [B] is each row's count of generated tokens so far (its group position and its
    noise counter); ``history`` is needed for the repetition guard; ``slot_masks`` (from
    ``audio_slot_masks``) for the audio constraint. ``vocab_ids`` [V']: the ids of the logits' columns
    when they cover only part of the vocabulary (``slot_masks`` then [5, V'], ``hashed_ids`` optionally
    ``id_hashes(vocab_ids)``); the result is always a vocabulary id.
    """
    logits = masked_logits(logits, config, n_generated, history, slot_masks, vocab_ids)
    if config.greedy:
        column = logits.argmax(dim=-1)
    else:
        logits = top_k_top_p(logits * inverse_temperature(config), config.top_k, config.top_p)
        noise = uniform_noise(seeds, n_generated, logits.shape[-1], ids=vocab_ids, hashed_ids=hashed_ids)
        scores = logits - torch.log(-torch.log(noise))
        # u rounds to 1.0 once in 2^24 draws (+inf noise): a banned id (-inf) must stay banned, not become NaN
        # (which argmax would pick: a text id inside an audio stream, a guarded repeat, a top-k reject)
        column = scores.masked_fill(logits == float("-inf"), float("-inf")).argmax(dim=-1)
    return column if vocab_ids is None else vocab_ids[column]
