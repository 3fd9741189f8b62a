"""The interleaved int4 / int8 GEMV's modes (``quant.interleaved.gemv``'s optional 5th configuration number):
the look-ahead mode changes when loads are issued, not what is computed, so it equals the plain kernel bit
for bit; the x-in-the-words'-layout mode contracts float32 products differently and, like every quantized
kernel, matches dequantize-then-matmul. Also the group-major GEMV (``quant.group_gemv``) against
dequantize-then-matmul. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import group_gemv, interleaved
from layer_cases import QKV_ROWS, QuantRoleCase
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("mode", [interleaved.GEMV_AHEAD, interleaved.GEMV_X2D])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
def test_interleaved_gemv_modes_equal_the_plain_kernel(bits, mode, prologue):
    case = QuantRoleCase.make(bits, prologue, 1)
    outs = [interleaved.gemv(case.x, case.laid, case.scale, case.scheme, config, **case.arguments())
            for config in ((16, 64, 4, 1), (16, 64, 4, 1, mode), (16, 128, 4, 1), (16, 128, 4, 1, mode))]
    if mode == interleaved.GEMV_AHEAD:
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[2], outs[3])
    for out in outs:
        assert _rel(out, case.expected) < 5e-3


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("config", group_gemv.CONFIGS)
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
def test_group_gemv_matches_dequantize_then_matmul(bits, config, prologue):
    """The group-major GEMV in bf16 on the GPU: every configuration the session times, whole tiles (QKV_ROWS
    rows) and a partial last block of rows; repeats are bit-identical (no atomics, fixed order)."""
    for rows in (QKV_ROWS, QKV_ROWS - 8):
        case = QuantRoleCase.make(bits, prologue, 1, out_features=rows)
        outs = [group_gemv.gemv(case.x, case.laid, case.scale, case.scheme, config, **case.arguments())
                for _ in range(2)]
        assert torch.equal(outs[0], outs[1])
        assert _rel(outs[0], case.expected) < 5e-3


def test_the_group_gemv_probe_passes_on_this_gpu():
    """The one-off probe that lets the decode session time the group-major GEMV on this GPU."""
    assert group_gemv.kernel_problem(str(torch.device("cuda", torch.cuda.current_device()))) is None
