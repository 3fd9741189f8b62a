"""Step1 generation: the fast path (static cache session) against the plain cached loop, transformers'
generate() and the official greedy reference; batching, seeds, stop reasons, progress, constraints.

CPU only (the fast path runs its step eagerly with torch ops here; ``test_generation_cuda.py`` checks the
CUDA kernels and graphs). The parity model is read from the fixture set; nothing is copied from it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_pdl
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import (
    DecodeOptions,
    DecodeSession,
    batch_bucket,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import (
    DECODE_SESSION_ATTR,
    GenerationRequestError,
    generate,
    get_decode_session,
    release_decode_session,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs, load_step1
from comfyui_step_audio_editx.engines.step_audio_editx.types import Progress, SamplingConfig, StopReason

GREEDY_RAW = SamplingConfig(do_sample=False, repetition_guard=False, constrain_audio=False)
GREEDY_CONSTRAINED = SamplingConfig(do_sample=False)
SAMPLED = SamplingConfig()  # current official path: T 0.7 alone (plus our audio constraint)
SAMPLED_ORIGINAL = SamplingConfig.original_path()  # first official path: T 0.7, top_k 50, repetition guard
SAMPLED_CONFIGS = pytest.mark.parametrize("sampled", [SAMPLED, SAMPLED_ORIGINAL], ids=["current", "original"])


def test_default_sampling_is_the_current_official_path():
    assert (SAMPLED.temperature, SAMPLED.top_k, SAMPLED.top_p, SAMPLED.repetition_guard) == (0.7, 0, 1.0, False)
    assert SAMPLED.do_sample and SAMPLED.constrain_audio
    assert (SAMPLED_ORIGINAL.top_k, SAMPLED_ORIGINAL.repetition_guard, SAMPLED_ORIGINAL.temperature) == (50, True, 0.7)


@pytest.fixture(scope="module")
def ref(parity) -> dict[str, np.ndarray]:
    data = parity.npz("step1_logits")
    return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model(parity):
    return load_step1(parity.editx_dir, device="cpu", dtype="fp32", attn_implementation="sdpa")


@pytest.fixture(scope="module")
def prompts(ref) -> list[list[int]]:
    """Four prompts of different lengths (the fixture's sequences)."""
    return [ref[f"{name}_input_ids"].tolist() for name in ("seq300", "row0", "seq40", "row1")]


def _run(model, prompts, caps, config, seeds, fast=True, progress=None):
    out = generate(model, prompts, caps, config, seeds, progress=progress, fast=fast)
    return [o.tokens for o in out], [o.stop_reason for o in out]


def test_greedy_fast_equals_plain_hf_and_official(model, ref):
    prompt = ref["seq300_input_ids"].tolist()
    expected = ref["greedy_new_tokens"].tolist()
    fast, fast_reasons = _run(model, [prompt], [len(expected)], GREEDY_RAW, [0], fast=True)
    plain, _ = _run(model, [prompt], [len(expected)], GREEDY_RAW, [0], fast=False)
    ids = torch.tensor(prompt)[None]
    with torch.no_grad():
        hf = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=len(expected))[0, ids.shape[1]:].tolist()
    assert fast[0] == expected
    assert plain[0] == expected
    assert hf == expected
    assert fast_reasons == [StopReason.CAP]


@pytest.mark.parametrize("config", [GREEDY_RAW, GREEDY_CONSTRAINED], ids=["raw", "constrained"])
def test_batched_rows_equal_alone_on_both_paths(model, prompts, config):
    caps = [17, 9, 23, 12]
    alone = [_run(model, [p], [c], config, [0], fast=False)[0][0] for p, c in zip(prompts, caps)]
    for fast in (True, False):
        batch, reasons = _run(model, prompts, caps, config, [0] * 4, fast=fast)
        assert batch == alone, f"fast={fast}"
        assert reasons == [StopReason.CAP] * 4
    assert [len(t) for t in alone] == caps


@SAMPLED_CONFIGS
def test_sampled_tokens_depend_only_on_seed_and_prompt(model, prompts, sampled):
    SAMPLED = sampled  # noqa: N806 - the fast path and the reference path agree for both official settings
    caps = [21, 21, 21, 21]
    seeds = [11, 12, 13, 14]
    plain, _ = _run(model, prompts, caps, SAMPLED, seeds, fast=False)
    fast, _ = _run(model, prompts, caps, SAMPLED, seeds, fast=True)
    assert fast == plain
    reordered, _ = _run(model, [prompts[2], prompts[0]], [21, 21], SAMPLED, [13, 11], fast=True)
    assert reordered == [plain[2], plain[0]]
    alone, _ = _run(model, [prompts[3]], [21], SAMPLED, [14], fast=True)
    assert alone == [plain[3]]
    other_seed, _ = _run(model, [prompts[3]], [21], SAMPLED, [15], fast=True)
    assert other_seed != alone
    assert len({tuple(t) for t in plain}) == 4


@SAMPLED_CONFIGS
def test_finished_rows_are_compacted_without_changing_results(model, prompts, sampled):
    SAMPLED = sampled  # noqa: N806
    many = prompts + prompts[:1]  # 5 rows -> bucket 8
    caps = [3, 30, 4, 5, 26]
    seeds = [1, 2, 3, 4, 5]
    session = get_decode_session(model)
    with torch.inference_mode():
        result = session.run(many, caps, SAMPLED, seeds)
    assert result.buckets[0] == 8 and result.buckets[-1] < 8  # rows 0, 2, 3 finish early
    for row in range(len(many)):
        alone, _ = _run(model, [many[row]], [caps[row]], SAMPLED, [seeds[row]], fast=False)
        assert result.tokens[row] == alone[0], f"row {row}"
    assert result.stop_reasons == [StopReason.CAP] * 5


def _eot_model(eot_logit: float) -> Step1ForCausalLM:
    """A tiny model whose final hidden state always points one way, with <|EOT|> scoring ``eot_logit`` above
    the audio ids' small random logits: EOT wins wherever the constraint allows it."""
    config = Step1Config(hidden_size=16, intermediate_size=32, num_attention_heads=4, num_attention_groups=2,
                         num_hidden_layers=2, vocab_size=C.TEXT_VOCAB_SIZE)
    torch.manual_seed(0)
    model = Step1ForCausalLM._from_config(config, attn_implementation="sdpa", **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 0.1)
        model.model.embed_tokens.weight[:, 0] = 10.0  # hidden[0] > 0 for every token
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.normal_(0.0, 0.02)
        model.lm_head.weight[C.EOT_ID] = 0.0
        model.lm_head.weight[C.EOT_ID, 0] = eot_logit / 4.0  # hidden[0] = sqrt(16) after the norm
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_stop_reasons_eos_and_cap(fast):
    model = _eot_model(50.0)
    tokens, reasons = _run(model, [[1, 4, 5, 6], [1, 7, 8]], [12, 3], SAMPLED, [0, 1], fast=fast)
    assert reasons == [StopReason.EOS, StopReason.CAP]
    assert len(tokens[0]) == C.TOKENS_PER_GROUP  # EOT refused first and inside the group
    assert len(tokens[1]) == 3
    assert all(C.VQ02_FIRST_ID <= t <= C.VQ06_LAST_ID for row in tokens for t in row)
    unconstrained = SamplingConfig(do_sample=False, repetition_guard=False, constrain_audio=False)
    tokens, reasons = _run(model, [[1, 4, 5, 6]], [12], unconstrained, [0], fast=fast)
    assert reasons == [StopReason.EOS] and tokens == [[]]


def _check_groups(tokens: list[int], reason: StopReason) -> None:
    for t, token in enumerate(tokens):
        slot = t % C.TOKENS_PER_GROUP
        if slot < C.VQ02_PER_GROUP:
            assert C.VQ02_FIRST_ID <= token <= C.VQ02_LAST_ID, (t, token)
        else:
            assert C.VQ06_FIRST_ID <= token <= C.VQ06_LAST_ID, (t, token)
    if reason is StopReason.EOS:
        assert tokens and len(tokens) % C.TOKENS_PER_GROUP == 0


@pytest.mark.parametrize("fast", [True, False])
def test_constraint_keeps_groups_aligned(model, prompts, fast):
    tokens, reasons = _run(model, prompts, [23, 31, 7, 40], SAMPLED, [5, 6, 7, 8], fast=fast)
    for row, reason in zip(tokens, reasons):
        _check_groups(row, reason)
    eot = _eot_model(3.0)  # EOT competes with the audio ids at every boundary: ends at random groups
    tokens, reasons = _run(eot, [[1, 4, 5]] * 6, [60] * 6, SAMPLED, list(range(6)), fast=fast)
    assert StopReason.EOS in reasons
    for row, reason in zip(tokens, reasons):
        _check_groups(row, reason)


@pytest.mark.parametrize("fast", [True, False])
def test_progress_interrupt_and_exception(model, prompts, fast):
    seen: list[Progress] = []

    def record(p: Progress) -> None:
        seen.append(p)

    _run(model, prompts[:2], [6, 9], SAMPLED, [1, 2], fast=fast, progress=record)
    assert [p.done for p in seen] == list(range(1, 10))
    assert all(p.stage == "generate" and p.total == 9 for p in seen)

    tokens, reasons = _run(model, prompts[:2], [30, 3], SAMPLED, [1, 2], fast=fast,
                           progress=lambda p: p.done >= 4)
    assert reasons == [StopReason.INTERRUPTED, StopReason.CAP]
    assert len(tokens[0]) == 4 and len(tokens[1]) == 3
    full, _ = _run(model, prompts[:1], [30], SAMPLED, [1], fast=fast)
    assert tokens[0] == full[0][:4]

    class Cancelled(Exception):
        pass

    def cancel(p: Progress) -> None:
        if p.done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        _run(model, prompts[:2], [10, 10], SAMPLED, [1, 2], fast=fast, progress=cancel)


def test_session_is_cached_and_dropped_when_the_model_moves(parity, ref):
    model = load_step1(parity.editx_dir, device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompt = ref["row0_input_ids"].tolist()
    first, _ = _run(model, [prompt], [10], SAMPLED, [3])
    session = model.__dict__[DECODE_SESSION_ATTR]
    layer = model.model.layers[0]
    # fused in place: q/k/v and gate/up are slices of one tensor each, keys and values unchanged
    assert layer.self_attn.k_proj.weight.untyped_storage().data_ptr() == \
        layer.self_attn.q_proj.weight.untyped_storage().data_ptr()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    again, _ = _run(model, [prompt], [10], SAMPLED, [3])
    assert model.__dict__[DECODE_SESSION_ATTR] is session and again == first
    model.to(torch.float64)
    assert DECODE_SESSION_ATTR not in model.__dict__ and session.state is None
    model.to(torch.float32)
    moved, _ = _run(model, [prompt], [10], SAMPLED, [3])
    assert moved == first and model.__dict__[DECODE_SESSION_ATTR] is not session
    release_decode_session(model)
    assert DECODE_SESSION_ATTR not in model.__dict__
    # programmatic dependent launch is a CUDA (sm_90+) launch mode: never on CPU, even when asked for
    assert not session.use_pdl and not session.pdl_for(16)
    assert not triton_pdl.supported(torch.device("cpu"))
    assert triton_pdl.line_elements(torch.bfloat16) == 64 and triton_pdl.line_elements(torch.float32) == 32


def test_bad_requests_raise_value_errors(model):
    with pytest.raises(GenerationRequestError, match="one cap and one seed"):
        generate(model, [[1, 2]], [5, 5], SAMPLED, [0])
    with pytest.raises(GenerationRequestError, match="empty"):
        generate(model, [[]], [5], SAMPLED, [0])
    with pytest.raises(GenerationRequestError, match="at least 1"):
        generate(model, [[1]], [0], SAMPLED, [0])
    with pytest.raises(GenerationRequestError, match="vocabulary"):
        generate(model, [[1, 10 ** 6]], [5], SAMPLED, [0])
    with pytest.raises(GenerationRequestError, match="context"):
        generate(model, [[1] * 10], [C.MAX_CONTEXT_TOKENS], SAMPLED, [0])
    assert isinstance(GenerationRequestError("x"), ValueError)


def test_batch_buckets_are_powers_of_two():
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 8, 9, 16, 17)] == [1, 2, 4, 8, 8, 16, 16, 32]
    assert DecodeSession.__init__  # the session class is importable without CUDA


def test_current_and_original_sampling_really_differ(model, prompts):
    """The settings reach both paths: same seeds, different official settings, different tokens."""
    caps, seeds = [40] * 4, [3, 4, 5, 6]
    hot, hot_original = SamplingConfig(temperature=3.0), SamplingConfig.original_path(temperature=3.0)
    for fast in (True, False):
        current, _ = _run(model, prompts, caps, hot, seeds, fast=fast)
        original, _ = _run(model, prompts, caps, hot_original, seeds, fast=fast)
        assert current != original, f"fast={fast}"
        assert current == _run(model, prompts, caps, hot, seeds, fast=not fast)[0]


def test_the_persistent_layer_kernel_is_a_gpu_mode_and_changes_nothing_elsewhere(model):
    """``DecodeOptions(persistent=True)`` needs CUDA graphs and the Triton kernels: on the CPU the session runs
    the plain step, with the same ids as the default session."""
    prompt = [5, 9, 11, 42, 7]
    want, _ = _run(model, [prompt], [10], SAMPLED, [3])
    session = get_decode_session(model, DecodeOptions(persistent=True))
    got, _ = _run(model, [prompt], [10], SAMPLED, [3])
    assert not session.persistent and not session.persistent_for(1) and "persistent" not in session.mode
    assert got == want
    release_decode_session(model)
