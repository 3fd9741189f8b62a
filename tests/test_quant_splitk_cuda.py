"""The split-K tensor-core kernel for interleaved int4 / int8 words (``quant.splitk``) on the GPU: it matches
dequantize-then-matmul at 1-16 rows with every prologue and every split; its result does not depend on which
program of a block finishes last (two calls, and graph replays, equal bit for bit); each call leaves its
counters at zero. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import splitk
from layer_cases import QuantRoleCase, replayed
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
# the session's candidates and more splits / tiles of both modes (int4; int8 reads twice the words per step)
CONFIGS = splitk.CONFIGS + ((32, 32, 4, 2, 2), (16, 32, 4, 2, 4), (64, 16, 4, 3, 8, 1), (128, 16, 4, 3, 1, 1))


def _run(case: QuantRoleCase, config) -> torch.Tensor:
    return splitk.splitk_dot(case.x, case.laid, case.scale, case.scheme, config, **case.arguments())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_splitk_matches_dequantize_then_matmul_and_repeats_exactly(bits, prologue, rows):
    case = QuantRoleCase.make(bits, prologue, rows)
    ran = 0
    for config in CONFIGS:
        if bits == 8:  # int8: 32 words per group of 128
            config = (config[0], config[1] * 2, *config[2:])
        if not splitk.fits(case.laid.shape[1], case.scheme, config) or (
                config[5:] == (splitk.CUDA_CORES,) and case.kwargs):
            continue  # [32, 32, 4, 3, 8] splits only the down matrix's rows; the CUDA-core mode runs no prologue
        first = _run(case, config)
        again = _run(case, config)
        assert _rel(first, case.expected) < 5e-3, config
        assert torch.equal(first, again), f"{config}: the split sums must not depend on arrival order"
        ran += 1
    assert ran >= (len(CONFIGS) - 1 if prologue == "residual" else 6)
    for _, counters in splitk._WORKSPACES[case.x.device]:
        assert int(counters.abs().sum()) == 0


def test_splitk_replays_in_a_cuda_graph_bit_for_bit():
    case = QuantRoleCase.make(4, "norm", 16)
    eager, results = replayed(lambda: _run(case, (32, 32, 4, 2, 4)))
    assert all(torch.equal(r, eager) for r in results)
    assert _rel(eager, case.expected) < 5e-3


def test_the_workspace_cannot_grow_inside_a_capture():
    case = QuantRoleCase.make(4, "norm", 4)
    bigger = (16, 32, 4, 2, 4)
    splitk._WORKSPACES.pop(case.x.device, None)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="before CUDA graph capture"):
        with torch.cuda.graph(graph):
            _run(case, bigger)
