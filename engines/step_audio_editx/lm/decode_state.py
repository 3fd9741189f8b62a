"""Per-row bookkeeping of a generation, kept on the device so no step needs the host.

Both generation paths use it: the plain cached loop (one row per prompt) and the static-cache session
(rows = a batch bucket, padding rows never run). After every chosen id, ``commit`` appends it to the row's
output, shifts its repetition-guard window, advances its counters and clears ``active`` when the row
emitted ``<|EOT|>`` or reached its cap. Rows whose ``active`` is False are frozen: later steps change
nothing of theirs, so a batch can run past a finished row without affecting its result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..constants import EOT_ID
from ..types import SamplingConfig
from .sampling import REPETITION_WINDOW, audio_slot_masks, id_hashes, select_next

NO_TOKEN = -1  # history entry before a row has REPETITION_WINDOW ids


@dataclass
class DecodeState:
    """Device tensors, R slot rows (a view may narrow them to the first B rows; ``out`` is never narrowed).

    tokens  [R] int64  the last chosen id (the next model input)
    pos     [R] int64  KV-cache slot of ``tokens`` (= its sqrt-ALiBi position)
    n_gen   [R] int64  ids chosen so far, <|EOT|> included (also the group position and noise counter)
    caps    [R] int64  the row's new-token cap
    active  [R] bool   still generating
    seeds   [R] int64
    history [R, W] int64  the last W ids (prompt included), newest last, NO_TOKEN where none yet
    rows    [R] int64  which output row the slot row writes to (padding rows: the spare last row)
    kv_len  [R] int32  keys the row attends to in the next step: pos + 1 while active, else 0
    hidden  [R, C]     the last prompt position's normed hidden state (prefill output)
    out     [N + 1, T] int64  chosen ids per request row (row N is the spare row of padding rows)
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    n_gen: torch.Tensor
    caps: torch.Tensor
    active: torch.Tensor
    seeds: torch.Tensor
    history: torch.Tensor
    rows: torch.Tensor
    kv_len: torch.Tensor
    hidden: torch.Tensor
    out: torch.Tensor

    @classmethod
    def allocate(cls, slot_rows: int, out_rows: int, out_cols: int, hidden_size: int, device: torch.device,
                 dtype: torch.dtype) -> "DecodeState":
        def ints(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.int64, device=device)

        return cls(tokens=ints(slot_rows), pos=ints(slot_rows), n_gen=ints(slot_rows), caps=ints(slot_rows),
                   active=torch.zeros(slot_rows, dtype=torch.bool, device=device), seeds=ints(slot_rows),
                   history=torch.full((slot_rows, REPETITION_WINDOW), NO_TOKEN, dtype=torch.int64, device=device),
                   rows=ints(slot_rows), kv_len=torch.zeros(slot_rows, dtype=torch.int32, device=device),
                   hidden=torch.zeros(slot_rows, hidden_size, dtype=dtype, device=device),
                   out=ints(out_rows + 1, out_cols))

    @property
    def slot_rows(self) -> int:
        return self.tokens.shape[0]

    def narrow(self, rows: int) -> "DecodeState":
        """A view of the first ``rows`` slot rows (what a batch bucket's step reads and writes)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return DecodeState(**{name: t if name == "out" else t[:rows] for name, t in values.items()})

    def permute_(self, order: torch.Tensor) -> None:
        """Reorder the first ``len(order)`` slot rows in place: row i takes the values of row ``order[i]``."""
        count = order.shape[0]
        for f in fields(self):
            if f.name == "out":
                continue
            tensor = getattr(self, f.name)
            tensor[:count] = tensor[:count].index_select(0, order)

    def load_requests(self, prompts: list[list[int]], caps: list[int], seeds: list[int], slot_rows: int) -> None:
        """Reset the first ``slot_rows`` rows for a new call: request r on row r, padding rows idle.

        Each row starts as if its last prompt id were the pending input: ``pos`` = its slot, ``n_gen`` 0.
        """
        n = len(prompts)
        spare = self.out.shape[0] - 1
        pad = slot_rows - n

        def put(tensor: torch.Tensor, values: list, fill) -> None:
            tensor[:slot_rows].copy_(torch.tensor(list(values) + [fill] * pad, dtype=tensor.dtype))

        put(self.tokens, [p[-1] for p in prompts], 0)
        put(self.pos, [len(p) - 1 for p in prompts], 0)
        put(self.n_gen, [0] * n, 0)
        put(self.caps, caps, 0)
        put(self.active, [True] * n, False)
        put(self.seeds, seeds, 0)
        put(self.rows, list(range(n)), spare)
        windows = [history_window(p) for p in prompts] + [[NO_TOKEN] * REPETITION_WINDOW] * pad
        self.history[:slot_rows].copy_(torch.tensor(windows, dtype=torch.int64))
        self.kv_len[:slot_rows].zero_()


def history_window(prompt: list[int]) -> list[int]:
    """The last REPETITION_WINDOW ids of a prompt, NO_TOKEN-padded on the left."""
    tail = list(prompt[-REPETITION_WINDOW:])
    return [NO_TOKEN] * (REPETITION_WINDOW - len(tail)) + tail


def commit(state: DecodeState, chosen: torch.Tensor) -> None:
    """Append ``chosen`` [B] to every active row of ``state`` (a B-row view); frozen rows stay as they are."""
    running = state.active
    token = torch.where(running, chosen, state.tokens)
    cols = state.n_gen.clamp(max=state.out.shape[1] - 1)
    state.out[state.rows, cols] = torch.where(running, token, state.out[state.rows, cols])
    shifted = torch.cat([state.history[:, 1:], token[:, None]], dim=1)
    state.history.copy_(torch.where(running[:, None], shifted, state.history))
    n_new = state.n_gen + running.long()
    state.n_gen.copy_(n_new)
    state.tokens.copy_(token)
    state.pos.add_(running.long())
    still = running & (token != EOT_ID) & (n_new < state.caps)
    state.active.copy_(still)
    state.kv_len.copy_(torch.where(still, state.pos + 1, 0))


@dataclass
class SamplerTables:
    """Constant inputs of the sampler for one vocabulary layout (built once per session and constraint mode).

    head: the LM head rows computed ([V', C]; the full lm_head when ``vocab_ids`` is None);
    vocab_ids [V'] (None = all ids in order); hashed_ids [V'] = ``id_hashes(ids)``; slot_masks [5, V'] or None.
    """

    head: torch.Tensor
    vocab_ids: torch.Tensor | None
    hashed_ids: torch.Tensor
    slot_masks: torch.Tensor | None

    @classmethod
    def build(cls, head: torch.Tensor, vocab_ids: torch.Tensor | None, constrain: bool) -> "SamplerTables":
        from .fused_weights import audio_head

        device = head.device
        ids = vocab_ids if vocab_ids is not None else torch.arange(head.shape[0], device=device)
        masks = None
        if constrain:
            masks = audio_slot_masks(head.shape[0] if vocab_ids is None else int(vocab_ids.max()) + 1, device)
            masks = masks if vocab_ids is None else masks[:, vocab_ids].contiguous()
        return cls(head=head if vocab_ids is None else audio_head(head, vocab_ids), vocab_ids=vocab_ids,
                   hashed_ids=id_hashes(ids), slot_masks=masks)


def choose_and_commit(logits: torch.Tensor, config: SamplingConfig, state: DecodeState,
                      tables: SamplerTables) -> None:
    """Reference (torch ops) token choice for a B-row view: ``select_next`` then ``commit``."""
    chosen = select_next(logits, config, state.seeds, state.n_gen, state.history, tables.slot_masks,
                         vocab_ids=tables.vocab_ids, hashed_ids=tables.hashed_ids)
    commit(state, chosen)
