"""The operand-layout tensor-core kernel for interleaved int4 / int8 words (``quant.operand_dot``) on the GPU: it
matches dequantize-then-matmul at 1-16 rows with every timed configuration and prologue; with float32
activations (exact float32 dots) it meets the dequantized bf16 weights to float32 rounding, which checks the
packed conversion of every stored byte; fp16 scales take the integer-op path; the split sums repeat and replay
in a CUDA graph bit for bit; and the per-GPU probe passes. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved, operand_dot, splitk
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme, dequantize, quantize
from layer_cases import EPS, HIDDEN, INNER, QKV_ROWS
from layer_cases import rand as _rand
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
BF16_TOLERANCE = 5e-3  # bf16 inputs and output: the rounding of the result, against a float32 reference
FP32_TOLERANCE = 1e-5  # float32 activations: float32 summation order only (the weights are dequantize's exactly)


def _case(bits: int, prologue: str, rows: int, dtype: torch.dtype = torch.bfloat16):
    scheme = QuantScheme(bits)
    cols = INNER if prologue == "swiglu" else HIDDEN  # SwiGLU: x = [gate | up], 2 x INNER wide
    packed, scale = quantize(_rand(QKV_ROWS, cols, seed=3, dtype=dtype) * 0.02, scheme)
    x = _rand(rows, 2 * cols if prologue == "swiglu" else cols, seed=4, dtype=dtype)
    norm = 1 + 0.1 * _rand(cols, seed=5, dtype=dtype)
    kwargs = {"norm": {"norm_weight": norm, "eps": EPS}, "swiglu": {"swiglu": True}, "residual": {}}[prologue]
    inputs = {"norm": lambda: ref_ops.rms_norm(x, norm, EPS), "swiglu": lambda: ref_ops.silu_mul(x),
              "residual": lambda: x}[prologue]()
    expected = torch.nn.functional.linear(inputs.float(), dequantize(packed, scale, scheme).float())
    return scheme, interleaved.interleave(packed, scheme), scale, x, kwargs, expected


def _run(scheme, laid, scale, x, kwargs, config, prologue):
    extra = {"residual": _rand(x.shape[0], QKV_ROWS, seed=6, dtype=x.dtype)} if prologue == "residual" else {}
    return operand_dot.operand_dot(x, laid, scale, scheme, config, **kwargs, **extra)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_operand_dot_matches_dequantize_then_matmul_and_repeats_exactly(bits, prologue, rows):
    scheme, laid, scale, x, kwargs, expected = _case(bits, prologue, rows)
    if prologue == "residual":
        expected = expected + _rand(rows, QKV_ROWS, seed=6).float()
    for config in operand_dot.CONFIGS:
        assert operand_dot.fits(laid.shape[1], scheme, config)
        first = _run(scheme, laid, scale, x, kwargs, config, prologue)
        again = _run(scheme, laid, scale, x, kwargs, config, prologue)
        assert _rel(first, expected) < BF16_TOLERANCE, config
        assert torch.equal(first, again), f"{config}: the split sums must not depend on arrival order"
    for _, counters in splitk._WORKSPACES[x.device]:
        assert int(counters.abs().sum()) == 0


@pytest.mark.parametrize("bits", [4, 8])
def test_float32_activations_meet_the_dequantized_weights_exactly(bits):
    """bf16 scales run the packed conversion; with float32 x the dots are float32 (``ieee``), so any weight
    off ``q.to(bf16) * scale`` by one bf16 step would show far above float32 rounding."""
    scheme, laid, scale, x, _, expected = _case(bits, "residual", 16)
    x = x.float()
    expected = x @ dequantize(interleaved.deinterleave(laid, scheme), scale, scheme).float().T
    for config in operand_dot.CONFIGS:
        assert _rel(operand_dot.operand_dot(x, laid, scale, scheme, config), expected) < FP32_TOLERANCE, config


@pytest.mark.parametrize("bits", [4, 8])
def test_fp16_scales_take_the_integer_path(bits):
    """A model run in fp16 (GPUs without bf16 arithmetic) keeps fp16 scales: the integer-op conversion."""
    scheme, laid, scale, x, kwargs, expected = _case(bits, "norm", 5, dtype=torch.float16)
    assert scale.dtype == torch.float16
    out = operand_dot.operand_dot(x, laid, scale, scheme, operand_dot.CONFIGS[0], **kwargs)
    assert _rel(out, expected) < BF16_TOLERANCE


def test_operand_dot_replays_in_a_cuda_graph_bit_for_bit():
    scheme, laid, scale, x, kwargs, expected = _case(4, "norm", 16)
    config = next(c for c in operand_dot.CONFIGS if c[4] > 1)  # a split configuration: partials and counters
    eager = _run(scheme, laid, scale, x, kwargs, config, "norm")  # sizes the workspace before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _run(scheme, laid, scale, x, kwargs, config, "norm")
    results = []
    for _ in range(3):
        graph.replay()
        results.append(out.clone())
    assert all(torch.equal(r, eager) for r in results)
    assert _rel(eager, expected) < BF16_TOLERANCE


def test_the_operand_dot_probe_passes_on_this_gpu():
    operand_dot.kernel_problem.cache_clear()
    assert operand_dot.kernel_problem(str(torch.device("cuda", torch.cuda.current_device()))) is None
