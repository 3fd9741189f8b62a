"""Token selection: audio constraints, the official repetition guard, and counter-based seeded sampling."""

import math

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig
from comfyui_step_audio_editx.engines.step_audio_editx.lm.sampling import (
    audio_slot_masks,
    repetition_guard,
    select_next,
    uniform_noise,
)

V = C.TEXT_VOCAB_SIZE


def official_repetition_guard(history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The official RepetitionAwareLogitsProcessor semantics, row by row in plain Python."""
    scores = scores.clone()
    for r in range(history.shape[0]):
        window = history[r, -10:].tolist()
        if len(window) < 10:
            continue
        last = window[-1]
        if window.count(last) / 10 > 0.1:
            scores[r, last] = float("-inf")
    return scores


def test_repetition_guard_matches_official_semantics():
    g = torch.Generator().manual_seed(0)
    history = torch.randint(0, 6, (64, 30), generator=g)  # small alphabet: many repeats
    scores = torch.randn(64, 8, generator=g)
    ours = repetition_guard(scores, history)
    ref = official_repetition_guard(history, scores)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    assert torch.isinf(ours).any() and not torch.isinf(ours).all()
    assert torch.equal(repetition_guard(scores, history[:, :9]), scores)  # window not full yet


def test_constraint_allows_only_the_right_codebook_per_slot():
    masks = audio_slot_masks(V, "cpu")
    logits = torch.zeros(10, V)
    n = torch.arange(10)
    cfg = SamplingConfig(do_sample=False, repetition_guard=False, constrain_audio=True)
    logits[:, C.EOT_ID] = 10.0  # the model "wants" to stop everywhere
    logits[:, 5] = 9.0  # and likes a text id
    out = select_next(logits, cfg, torch.zeros(10, dtype=torch.long), n, slot_masks=masks)
    for t, tok in enumerate(out.tolist()):
        if t == 0:
            assert C.VQ02_FIRST_ID <= tok <= C.VQ02_LAST_ID  # never an empty output
        elif t % 5 == 0:
            assert tok == C.EOT_ID  # EOT only at a group boundary
        elif t % 5 == 1:
            assert C.VQ02_FIRST_ID <= tok <= C.VQ02_LAST_ID
        else:
            assert C.VQ06_FIRST_ID <= tok <= C.VQ06_LAST_ID


def test_noise_is_uniform_and_reproducible():
    seeds = torch.tensor([0, 1, 2, 2**40 + 7])
    u = uniform_noise(seeds, torch.tensor([0, 0, 5, 9]), 4096)
    assert u.shape == (4, 4096) and float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert torch.equal(u, uniform_noise(seeds, torch.tensor([0, 0, 5, 9]), 4096))
    assert not torch.equal(u[0], u[1])  # seeds differ
    assert not torch.equal(uniform_noise(seeds[:1], 1, 4096)[0], u[0])  # steps differ


def test_sampling_follows_softmax_of_scaled_logits():
    """Gumbel-max over counter noise samples from softmax(logits / T): check frequencies."""
    probs_logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    cfg = SamplingConfig(temperature=0.7, top_k=0, top_p=1.0, repetition_guard=False, constrain_audio=False)
    n = 20000
    seeds = torch.arange(n)
    picks = select_next(probs_logits.expand(n, -1), cfg, seeds, torch.zeros(n, dtype=torch.long))
    freq = torch.bincount(picks, minlength=5).float() / n
    expected = torch.softmax(probs_logits / 0.7, dim=0)
    assert torch.allclose(freq, expected, atol=4 * math.sqrt(0.25 / n))


def test_top_k_and_top_p_exclude_tail():
    logits = torch.tensor([[3.0, 2.9, 2.8, -5.0, -6.0]]).expand(2000, -1)
    seeds = torch.arange(2000)
    zero = torch.zeros(2000, dtype=torch.long)
    top2 = select_next(logits, SamplingConfig(temperature=1.0, top_k=2, repetition_guard=False, constrain_audio=False), seeds, zero)
    assert set(top2.tolist()) == {0, 1}
    top_p = select_next(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=0.5, repetition_guard=False, constrain_audio=False), seeds, zero)
    assert set(top_p.tolist()) <= {0, 1} and 0 in top_p.tolist()


def test_row_tokens_do_not_depend_on_batch_company():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, V, generator=g)
    cfg = SamplingConfig(repetition_guard=False, constrain_audio=True)
    masks = audio_slot_masks(V, "cpu")
    seeds = torch.tensor([11, 12, 13, 14])
    n = torch.tensor([0, 3, 7, 12])
    batch = select_next(logits, cfg, seeds, n, slot_masks=masks)
    alone = torch.cat([select_next(logits[i:i + 1], cfg, seeds[i:i + 1], n[i:i + 1], slot_masks=masks) for i in range(4)])
    assert torch.equal(batch, alone)


def test_guard_and_constraint_need_their_inputs():
    logits = torch.zeros(1, V)
    with pytest.raises(ValueError, match="history"):
        select_next(logits, SamplingConfig(constrain_audio=False, repetition_guard=True), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="slot masks"):
        select_next(logits, SamplingConfig(repetition_guard=False), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_default_sampling_keeps_the_tail_and_repeats_while_the_original_path_cuts_both():
    """Current official sampling is temperature alone: ids outside the best 50 and a thrice-repeated id stay
    possible. The original path (top-k 50 + guard) never draws either."""
    vocab = 200
    logits = torch.linspace(4.0, 0.0, vocab)[None].repeat(4096, 1)  # id 0 best, a long flat tail
    seeds = torch.arange(4096)
    zero = torch.zeros(4096, dtype=torch.long)
    history = torch.full((4096, 10), 0, dtype=torch.long)
    history[:, :8] = torch.arange(100, 108)  # the last id (0) occurs twice in the window: the guard bans it
    current = SamplingConfig(constrain_audio=False)
    original = SamplingConfig(top_k=50, repetition_guard=True, constrain_audio=False)  # original_path, unconstrained
    got = select_next(logits, current, seeds, zero, history)
    cut = select_next(logits, original, seeds, zero, history)
    assert (got >= 50).any() and (got == 0).any()
    assert not (cut >= 51).any() and not (cut == 0).any()  # id 0 guarded: the best 50 of the rest are 1..50
