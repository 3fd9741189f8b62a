"""The operand-layout tensor-core kernel for interleaved int4 / int8 words (``quant.operand_dot``) on the GPU: it
matches dequantize-then-matmul at 1-16 rows with every timed configuration and prologue; with float32
activations (exact float32 dots) it meets the dequantized bf16 weights to float32 rounding, which checks the
packed conversion of every stored byte; fp16 scales take the integer-op path; the split sums repeat and replay
in a CUDA graph bit for bit; and the per-GPU probe passes. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved, operand_dot, splitk
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import dequantize
from layer_cases import QuantRoleCase, replayed
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
BF16_TOLERANCE = 5e-3  # bf16 inputs and output: the rounding of the result, against a float32 reference
FP32_TOLERANCE = 1e-5  # float32 activations: float32 summation order only (the weights are dequantize's exactly)


def _run(case: QuantRoleCase, config) -> torch.Tensor:
    return operand_dot.operand_dot(case.x, case.laid, case.scale, case.scheme, config, **case.arguments())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_operand_dot_matches_dequantize_then_matmul_and_repeats_exactly(bits, prologue, rows):
    case = QuantRoleCase.make(bits, prologue, rows)
    for config in operand_dot.CONFIGS:
        assert operand_dot.fits(case.laid.shape[1], case.scheme, config)
        first = _run(case, config)
        again = _run(case, config)
        assert _rel(first, case.expected) < BF16_TOLERANCE, config
        assert torch.equal(first, again), f"{config}: the split sums must not depend on arrival order"
    for _, counters in splitk._WORKSPACES[case.x.device]:
        assert int(counters.abs().sum()) == 0


@pytest.mark.parametrize("bits", [4, 8])
def test_float32_activations_meet_the_dequantized_weights_exactly(bits):
    """bf16 scales run the packed conversion; with float32 x the dots are float32 (``ieee``), so any weight
    off ``q.to(bf16) * scale`` by one bf16 step would show far above float32 rounding."""
    case = QuantRoleCase.make(bits, "residual", 16)
    x = case.x.float()
    expected = x @ dequantize(interleaved.deinterleave(case.laid, case.scheme), case.scale, case.scheme).float().T
    for config in operand_dot.CONFIGS:
        out = operand_dot.operand_dot(x, case.laid, case.scale, case.scheme, config)
        assert _rel(out, expected) < FP32_TOLERANCE, config


@pytest.mark.parametrize("bits", [4, 8])
def test_fp16_scales_take_the_integer_path(bits):
    """A model run in fp16 (GPUs without bf16 arithmetic) keeps fp16 scales: the integer-op conversion."""
    case = QuantRoleCase.make(bits, "norm", 5, dtype=torch.float16)
    assert case.scale.dtype == torch.float16
    assert _rel(_run(case, operand_dot.CONFIGS[0]), case.expected) < BF16_TOLERANCE


def test_operand_dot_replays_in_a_cuda_graph_bit_for_bit():
    case = QuantRoleCase.make(4, "norm", 16)
    config = next(c for c in operand_dot.CONFIGS if c[4] > 1)  # a split configuration: partials and counters
    eager, results = replayed(lambda: _run(case, config))
    assert all(torch.equal(r, eager) for r in results)
    assert _rel(eager, case.expected) < BF16_TOLERANCE


def test_the_operand_dot_probe_passes_on_this_gpu():
    operand_dot.kernel_problem.cache_clear()
    assert operand_dot.kernel_problem(str(torch.device("cuda", torch.cuda.current_device()))) is None
