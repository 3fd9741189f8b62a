"""Token choice over a partial vocabulary (the fast path's <|EOT|> + audio LM head) equals the full one."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_state import NO_TOKEN, DecodeState, commit
from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import audio_vocab_ids
from comfyui_step_audio_editx.engines.step_audio_editx.lm.sampling import (
    audio_slot_masks,
    id_hashes,
    repetition_guard,
    select_next,
    uniform_noise,
)
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

V = C.TEXT_VOCAB_SIZE
CONFIGS = [
    SamplingConfig(),
    SamplingConfig(do_sample=False),
    SamplingConfig(temperature=1.3, top_k=0, top_p=0.8),
    SamplingConfig(temperature=0.5, top_k=7, top_p=0.9, repetition_guard=False),
    SamplingConfig.original_path(),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "greedy", "top_p", "top_k_top_p", "original"])
def test_audio_columns_choose_like_the_full_vocabulary(config):
    gen = torch.Generator().manual_seed(0)
    rows = 32
    logits = torch.randn(rows, V, generator=gen) * 3
    ids = audio_vocab_ids(V, "cpu")
    n_gen = torch.arange(rows) % 13
    history = torch.randint(C.VQ02_FIRST_ID, C.VQ02_FIRST_ID + 4, (rows, 10), generator=gen)  # many repeats
    history[::5, :3] = NO_TOKEN  # some windows not full yet: no guard there
    seeds = torch.arange(rows) * 7 + 1
    logits[:, C.EOT_ID] += 10.0  # EOT is a real contender at group boundaries
    full_masks = audio_slot_masks(V, "cpu")
    full = select_next(logits, config, seeds, n_gen, history, full_masks)
    part = select_next(logits[:, ids], config, seeds, n_gen, history, full_masks[:, ids], vocab_ids=ids,
                       hashed_ids=id_hashes(ids))
    assert torch.equal(full, part)
    assert (full == C.EOT_ID).any() or config.greedy


def test_guard_ignores_windows_that_are_not_full():
    logits = torch.zeros(2, 8)
    history = torch.tensor([[NO_TOKEN] + [5] * 9, [3] * 10])
    out = repetition_guard(logits, history)
    assert not torch.isinf(out[0]).any()
    assert torch.isinf(out[1, 3]) and torch.isinf(out[1]).sum() == 1


def test_noise_over_chosen_ids_equals_full_noise_columns():
    seeds = torch.tensor([3, 99])
    ids = torch.tensor([3, 65536, 70000])
    full = uniform_noise(seeds, torch.tensor([4, 0]), V)
    assert torch.equal(uniform_noise(seeds, torch.tensor([4, 0]), V, ids=ids), full[:, ids])


def test_commit_freezes_finished_rows():
    state = DecodeState.allocate(3, 2, 6, 4, torch.device("cpu"), torch.float32)
    state.load_requests([[1, 2, 3], [4, 5]], [2, 5], [0, 0], 3)
    commit(state, torch.tensor([70, 71, 72]))
    commit(state, torch.tensor([C.EOT_ID, 81, 82]))
    commit(state, torch.tensor([90, C.EOT_ID, 92]))
    commit(state, torch.tensor([95, 96, 97]))
    assert state.out[0, :2].tolist() == [70, C.EOT_ID] and state.n_gen.tolist() == [2, 3, 0]
    assert state.out[1, :3].tolist() == [71, 81, C.EOT_ID]
    assert state.active.tolist() == [False, False, False]  # row 0: cap 2, row 1: EOT, row 2: padding
    assert state.history[1, -3:].tolist() == [71, 81, C.EOT_ID] and state.pos.tolist() == [4, 4, 0]


def test_noise_of_exactly_one_never_revives_a_banned_id():
    """u = (bits + 0.5) / 2^24 rounds to 1.0 for bits = 2^24 - 1 (once in 16.7 M draws): +inf noise on a -inf
    logit gave NaN, which argmax picked (a text id in an audio stream every ~220 steps over the full vocab)."""
    seed, step, text_id = 52, 0, 18946  # a draw with u == 1.0 at a text id
    assert uniform_noise(torch.tensor([seed]), step, V)[0, text_id] == 1.0
    logits = torch.zeros(1, V)
    logits[0, text_id] = float("-inf")
    free = SamplingConfig(top_k=0, repetition_guard=False, constrain_audio=False)
    assert select_next(logits, free, torch.tensor([seed]), torch.tensor([step])).item() != text_id
    audio = SamplingConfig(repetition_guard=False)
    chosen = select_next(torch.zeros(1, V), audio, torch.tensor([seed]), torch.tensor([step]),
                         slot_masks=audio_slot_masks(V, "cpu")).item()
    assert C.VQ02_FIRST_ID <= chosen <= C.VQ02_LAST_ID
