"""Issue 19's attention merge reading its partials four ahead (``DecodeOptions.merge_ahead``) changes when
memory is read, never what is computed: bit for bit the path before (one partial at a time), and whole
generations give the same tokens for the same seeds with the same matmul kernels. Skips without CUDA and
triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_attention, triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, get_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig
from layer_cases import SHAPE, AttentionInputs, small_step1
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
CUDA = torch.device("cuda")
CACHE = 3400  # up to 27 partials of 128 keys: every remainder of the merge's groups of four
# lengths whose partial counts cover 0..7 mod 8, one chunk, and rows that do not run
LENGTHS = [3400, 1, 2, 129, 257, 385, 513, 641, 769, 897, 1025, 3329, 3201, 1153, 2049, 5]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_merge_ahead_equals_the_path_before_bit_for_bit(dtype, rows):
    case = AttentionInputs.make(LENGTHS[:rows], CACHE, dtype)
    ws = triton_attention.AttentionWorkspace(rows, SHAPE, CACHE, CUDA)
    outs = []
    for ahead in (False, True, True):  # twice: the merge counters re-arm
        outs.append(case.run(ws, merge_ahead=ahead))
        torch.cuda.synchronize()
        assert int(ws.counters.abs().sum()) == 0
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)
    assert _rel(outs[0][0], case.reference()) < (1e-5 if dtype == torch.float32 else 2e-2)
    if rows > 2:
        assert torch.count_nonzero(outs[1][0][1]) == 0


@pytest.mark.parametrize("linear", ["triton", "auto"])
def test_generation_gives_the_same_tokens_as_the_path_before(linear):
    """Before (one partial at a time) and reading ahead, with the same matmul kernels:
    identical ids for every seed at batch 1 and 8, for the current and the first official sampling."""
    model = small_step1()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, C.VQ06_LAST_ID, (n,), generator=gen).tolist()
               for n in (700, 41, 1300, 129, 5, 513, 64, 257)]
    caps = [160, 40, 80, 96, 17, 96, 60, 33]
    runs = [([prompts[0]], [caps[0]], [seed]) for seed in (0, 7, 123)] + [(prompts, caps, list(range(8)))]
    tokens = {}
    choices = None
    for ahead in (False, True):
        session = get_decode_session(model, DecodeOptions(linear=linear, merge_ahead=ahead))
        if ahead:
            session._linear_choice.update(choices)  # the same matmul kernels: only the merge differs
        for config in (SamplingConfig(), SamplingConfig.original_path()):
            for i, (p, c, seeds) in enumerate(runs):
                tokens[(ahead, config, i)] = [o.tokens for o in generate(model, p, c, config, seeds)]
        choices = dict(session._linear_choice)
    for key, value in tokens.items():
        if not key[0]:
            assert tokens[(True, *key[1:])] == value, key
    assert sum(len(t) for t in tokens[(True, SamplingConfig(), len(runs) - 1)]) == sum(caps)
