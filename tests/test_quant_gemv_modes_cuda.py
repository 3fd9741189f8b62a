"""The interleaved int4 / int8 GEMV's modes (``quant.interleaved.gemv``'s optional 5th configuration number):
the look-ahead mode changes when loads are issued, not what is computed, so it equals the plain kernel bit
for bit; the x-in-the-words'-layout mode contracts float32 products differently and, like every quantized
kernel, matches dequantize-then-matmul. Also the group-major GEMV (``quant.group_gemv``) against
dequantize-then-matmul. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_decode
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import group_gemv, interleaved
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import QuantScheme, dequantize, quantize
from layer_cases import EPS, HIDDEN, INNER, QKV_ROWS
from layer_cases import rand as _rand
from layer_cases import rel as _rel

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("mode", [interleaved.GEMV_AHEAD, interleaved.GEMV_X2D])
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
def test_interleaved_gemv_modes_equal_the_plain_kernel(bits, mode, prologue):
    scheme = QuantScheme(bits)
    cols = INNER if prologue == "swiglu" else HIDDEN  # SwiGLU: x = [gate | up], 2 x INNER wide
    weight = _rand(QKV_ROWS, cols, seed=3) * 0.02
    packed, scale = quantize(weight, scheme)
    laid = interleaved.interleave(packed, scheme)
    x = _rand(1, 2 * cols if prologue == "swiglu" else cols, seed=4)
    norm = 1 + 0.1 * _rand(cols, seed=5)
    kwargs = {"norm": {"norm_weight": norm, "eps": EPS}, "swiglu": {"swiglu": True}, "residual": {}}[prologue]
    outs = []
    for config in ((16, 64, 4, 1), (16, 64, 4, 1, mode), (16, 128, 4, 1), (16, 128, 4, 1, mode)):
        extra = {"residual": _rand(1, QKV_ROWS, seed=6)} if prologue == "residual" else {}
        outs.append(interleaved.gemv(x, laid, scale, scheme, config, **kwargs, **extra))
    if mode == interleaved.GEMV_AHEAD:
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[2], outs[3])
    inputs = {"norm": lambda: ref_ops.rms_norm(x, norm, EPS), "swiglu": lambda: ref_ops.silu_mul(x),
              "residual": lambda: x}[prologue]()
    expected = torch.nn.functional.linear(inputs.float(), dequantize(packed, scale, scheme).float())
    if prologue == "residual":
        expected = expected + _rand(1, QKV_ROWS, seed=6).float()
    for out in outs:
        assert _rel(out, expected) < 5e-3


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("config", group_gemv.CONFIGS)
@pytest.mark.parametrize("prologue", ["norm", "swiglu", "residual"])
def test_group_gemv_matches_dequantize_then_matmul(bits, config, prologue):
    """The group-major GEMV in bf16 on the GPU: every configuration the session times, whole tiles (QKV_ROWS
    rows) and a partial last block of rows; repeats are bit-identical (no atomics, fixed order)."""
    scheme = QuantScheme(bits)
    cols = INNER if prologue == "swiglu" else HIDDEN
    x = _rand(1, 2 * cols if prologue == "swiglu" else cols, seed=4)
    norm = 1 + 0.1 * _rand(cols, seed=5)
    kwargs = {"norm": {"norm_weight": norm, "eps": EPS}, "swiglu": {"swiglu": True}, "residual": {}}[prologue]
    inputs = {"norm": lambda: ref_ops.rms_norm(x, norm, EPS), "swiglu": lambda: ref_ops.silu_mul(x),
              "residual": lambda: x}[prologue]()
    for rows in (QKV_ROWS, QKV_ROWS - 8):
        packed, scale = quantize(_rand(rows, cols, seed=3) * 0.02, scheme)
        laid = interleaved.interleave(packed, scheme)
        resid = _rand(1, rows, seed=6)
        outs = [group_gemv.gemv(x, laid, scale, scheme, config, **kwargs,
                                **({"residual": resid.clone()} if prologue == "residual" else {}))
                for _ in range(2)]
        assert torch.equal(outs[0], outs[1])
        expected = torch.nn.functional.linear(inputs.float(), dequantize(packed, scale, scheme).float())
        if prologue == "residual":
            expected = expected + resid.float()
        assert _rel(outs[0], expected) < 5e-3


def test_the_group_gemv_probe_passes_on_this_gpu():
    """The one-off probe that lets the decode session time the group-major GEMV on this GPU."""
    assert group_gemv.kernel_problem(str(torch.device("cuda", torch.cuda.current_device()))) is None
