"""The split-K tensor-core kernel for interleaved int4 / int8 words (``quant.splitk``) on the GPU: it matches
dequantize-then-matmul at 1-16 rows with every prologue and every split; its result does not depend on which
program of a block finishes last (two calls, and graph replays, equal bit for bit); each call leaves its
counters at zero. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved, splitk
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme, dequantize, quantize
from layer_cases import EPS, HIDDEN, INNER, QKV_ROWS
from layer_cases import rand as _rand
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
# the session's candidates and more splits / tiles of both modes (int4; int8 reads twice the words per step)
CONFIGS = splitk.CONFIGS + ((32, 32, 4, 2, 2), (16, 32, 4, 2, 4), (64, 16, 4, 3, 8, 1), (128, 16, 4, 3, 1, 1))


def _case(bits: int, prologue: str, rows: int):
    scheme = QuantScheme(bits)
    cols = INNER if prologue == "swiglu" else HIDDEN  # SwiGLU: x = [gate | up], 2 x INNER wide
    packed, scale = quantize(_rand(QKV_ROWS, cols, seed=3) * 0.02, scheme)
    x = _rand(rows, 2 * cols if prologue == "swiglu" else cols, seed=4)
    norm = 1 + 0.1 * _rand(cols, seed=5)
    kwargs = {"norm": {"norm_weight": norm, "eps": EPS}, "swiglu": {"swiglu": True}, "residual": {}}[prologue]
    inputs = {"norm": lambda: ref_ops.rms_norm(x, norm, EPS), "swiglu": lambda: ref_ops.silu_mul(x),
              "residual": lambda: x}[prologue]()
    expected = torch.nn.functional.linear(inputs.float(), dequantize(packed, scale, scheme).float())
    return scheme, interleaved.interleave(packed, scheme), scale, x, kwargs, expected


def _run(scheme, laid, scale, x, kwargs, config, prologue):
    extra = {"residual": _rand(x.shape[0], QKV_ROWS, seed=6)} if prologue == "residual" else {}
    return splitk.splitk_dot(x, laid, scale, scheme, config, **kwargs, **extra)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_splitk_matches_dequantize_then_matmul_and_repeats_exactly(bits, prologue, rows):
    scheme, laid, scale, x, kwargs, expected = _case(bits, prologue, rows)
    if prologue == "residual":
        expected = expected + _rand(rows, QKV_ROWS, seed=6).float()
    ran = 0
    for config in CONFIGS:
        if bits == 8:  # int8: 32 words per group of 128
            config = (config[0], config[1] * 2, *config[2:])
        if not splitk.fits(laid.shape[1], scheme, config) or (config[5:] == (splitk.CUDA_CORES,) and kwargs):
            continue  # [32, 32, 4, 3, 8] splits only the down matrix's rows; the CUDA-core mode runs no prologue
        first = _run(scheme, laid, scale, x, kwargs, config, prologue)
        again = _run(scheme, laid, scale, x, kwargs, config, prologue)
        assert _rel(first, expected) < 5e-3, config
        assert torch.equal(first, again), f"{config}: the split sums must not depend on arrival order"
        ran += 1
    assert ran >= (len(CONFIGS) - 1 if prologue == "residual" else 6)
    for _, counters in splitk._WORKSPACES[x.device]:
        assert int(counters.abs().sum()) == 0


def test_splitk_replays_in_a_cuda_graph_bit_for_bit():
    scheme, laid, scale, x, kwargs, expected = _case(4, "norm", 16)
    config = (32, 32, 4, 2, 4)
    eager = _run(scheme, laid, scale, x, kwargs, config, "norm")  # sizes the workspace before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _run(scheme, laid, scale, x, kwargs, config, "norm")
    results = []
    for _ in range(3):
        graph.replay()
        results.append(out.clone())
    assert all(torch.equal(r, eager) for r in results)
    assert _rel(eager, expected) < 5e-3


def test_the_workspace_cannot_grow_inside_a_capture():
    scheme, laid, scale, x, kwargs, _ = _case(4, "norm", 4)
    bigger = (16, 32, 4, 2, 4)
    splitk._WORKSPACES.pop(x.device, None)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="before CUDA graph capture"):
        with torch.cuda.graph(graph):
            _run(scheme, laid, scale, x, kwargs, bigger, "norm")
