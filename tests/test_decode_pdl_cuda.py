"""Programmatic dependent launch (``lm/triton_pdl.py``) changes when the decode kernels start, never what they
compute: each kernel launched as a PDL dependent equals its plain launch bit for bit (and the torch
reference within the usual tolerance), and whole generations give the same tokens for the same seeds with
PDL on and off. Skips without CUDA, triton's grid dependency control or an sm_90+ GPU."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import (triton_attention, triton_decode, triton_pdl,
                                                                triton_sampler)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import (
    DOT_CONFIGS,
    GEMV_CONFIGS,
    LinearChoice,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_state import DecodeState, SamplerTables
from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import audio_vocab_ids
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, get_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig
from layer_cases import EPS, HIDDEN, INNER, QKV_ROWS, SHAPE, AttentionInputs, LayerInputs, small_step1
from layer_cases import rand as _rand
from layer_cases import rel as _rel

CUDA = torch.device("cuda")
pytestmark = pytest.mark.skipif(not (triton_decode.available() and triton_pdl.capable(CUDA)),
                                reason="needs CUDA, triton with grid dependency control and an sm_90+ GPU")
# every configuration with its fused prologue, and each kernel once without (compile time on the GPU)
KERNELS = [LinearChoice("dot", c, True) for c in DOT_CONFIGS] + [LinearChoice("gemv", c, True) for c in GEMV_CONFIGS] \
    + [LinearChoice("dot", DOT_CONFIGS[0], False), LinearChoice("gemv", GEMV_CONFIGS[0], False)]
SEEDS_ONE_ROW = (0, 7, 123)




@pytest.mark.parametrize("choice", KERNELS, ids=str)
@pytest.mark.parametrize("rows", [1, 8])
def test_pdl_matmuls_equal_plain_launch_and_reference(choice, rows):
    if choice.kernel == "gemv" and rows != 1:
        pytest.skip("gemv runs one row")
    weight = _rand(QKV_ROWS, HIDDEN, seed=7) * 0.02
    down = _rand(HIDDEN, INNER, seed=8) * 0.02
    layer = LayerInputs.make(rows)
    results = [layer.run(weight, down, choice, pdl=pdl) for pdl in (False, True)]
    torch.cuda.synchronize()
    for plain, dependent in zip(*results):
        assert torch.equal(plain, dependent)
    expected = torch.nn.functional.linear(ref_ops.rms_norm(layer.resid, layer.norm, EPS), weight)
    assert _rel(results[1][0], expected) < 1e-2
    reference = layer.resid + torch.nn.functional.linear(ref_ops.silu_mul(layer.gate_up), down)
    assert _rel(results[1][1], reference) < 1e-2


@pytest.mark.parametrize("rows", [1, 8, 16])
def test_pdl_attention_norm_silu_equal_plain_launch(rows):
    length = 1100
    case = AttentionInputs.make([1, 2, 127, 128, 129, 257, 600, 1000, 1099, 64, 300, 513, 700, 900, 1050, 5][:rows],
                                length)
    ws = triton_attention.AttentionWorkspace(rows, SHAPE, length, CUDA)
    outs = []
    for pdl in (False, True, True):  # twice with PDL: the merge counters re-arm
        out, k, v = case.run(ws, pdl=pdl)
        resid, delta = _rand(rows, 3072, seed=1), _rand(rows, 3072, seed=2)
        normed = triton_decode.add_rms_norm(resid, delta, 1 + 0.1 * _rand(3072, seed=3), 1e-5, pdl=pdl)
        silu = triton_decode.silu_mul(_rand(rows, 2 * 8192, seed=12), pdl=pdl)
        torch.cuda.synchronize()
        outs.append((out, k, v, resid, normed, silu))
        assert int(ws.counters.abs().sum()) == 0
    for dependent in outs[1:]:
        for a, b in zip(outs[0], dependent):
            assert torch.equal(a, b)
    assert _rel(outs[1][0], case.reference()) < 2e-2


@pytest.mark.parametrize("config", [SamplingConfig(), SamplingConfig.original_path(),
                                    SamplingConfig(top_k=0, top_p=0.7)], ids=["default", "original", "top_p"])
def test_pdl_sampler_equals_plain_launch(config):
    rows = 8
    ids = audio_vocab_ids(C.TEXT_VOCAB_SIZE, CUDA)
    tables = SamplerTables.build(_rand(C.TEXT_VOCAB_SIZE, 8, dtype=torch.float32, seed=12), ids, True)
    states = []
    for _ in range(2):
        state = DecodeState.allocate(rows, rows, 40, 8, CUDA, torch.float32)
        state.load_requests([[1, 2, 3]] * rows, [30] * rows, list(range(100, 100 + rows)), rows)
        states.append(state)
    for step in range(20):
        logits = _rand(rows, tables.head.shape[0], dtype=torch.float32, seed=200 + step) * 2
        for pdl, state in zip((False, True), states):
            triton_sampler.sample_and_commit(logits, config, state, tables, pdl=pdl)
    for name in ("tokens", "pos", "n_gen", "active", "history", "out", "kv_len"):
        assert torch.equal(getattr(states[0], name), getattr(states[1], name)), name


@pytest.fixture(scope="module")
def small_model():
    return small_step1()


@pytest.mark.parametrize("linear", ["triton", "auto"])
def test_pdl_generation_gives_the_same_tokens_as_plain_launches(small_model, linear):
    """Today's path (PDL off) and the new one, with the same matmul kernels: identical ids for every seed at
    batch 1 and 8, for the current and the first official sampling."""
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, C.VQ06_LAST_ID, (n,), generator=gen).tolist() for n in (300, 41, 700, 129, 5, 513,
                                                                                          64, 257)]
    caps = [96, 40, 80, 96, 17, 96, 60, 33]
    runs = [([prompts[0]], [caps[0]], [seed]) for seed in SEEDS_ONE_ROW] + [(prompts, caps, list(range(8)))]
    tokens = {}
    choices = None
    for pdl in (False, True):
        session = get_decode_session(small_model, DecodeOptions(linear=linear, pdl=pdl))
        assert session.use_pdl == pdl
        if pdl:
            session._linear_choice.update(choices)  # the same kernels: only the launches differ
        for config in (SamplingConfig(), SamplingConfig.original_path()):
            for i, (p, c, seeds) in enumerate(runs):
                out = generate(small_model, p, c, config, seeds)
                tokens[(pdl, config, i)] = [o.tokens for o in out]
                assert out[0].path.endswith("+pdl") == pdl
        choices = dict(session._linear_choice)
    for key, value in tokens.items():
        if not key[0]:
            assert tokens[(True, *key[1:])] == value, key
    assert sum(len(t) for t in tokens[(True, SamplingConfig(), len(runs) - 1)]) == sum(caps)


def test_pdl_default_starts_at_batch_two_and_the_switch_turns_it_off(small_model, monkeypatch):
    """Measured: PDL helps at batch 8 / 16 and not at batch 1, so by default batch 1 launches plainly."""
    session = get_decode_session(small_model, DecodeOptions())
    assert session.use_pdl and not session.pdl_for(1) and session.pdl_for(2) and session.pdl_for(16)
    monkeypatch.setenv(triton_pdl.PDL_ENV, "0")
    session = get_decode_session(small_model, DecodeOptions(linear="triton"))
    assert not session.use_pdl and not session.pdl_for(16)
    out = generate(small_model, [[1, 2, 3]] * 2, [5, 5], SamplingConfig(), [0, 1])
    assert not out[0].path.endswith("+pdl")
