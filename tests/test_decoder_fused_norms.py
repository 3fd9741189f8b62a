"""The flow decoder's fused norms off CUDA: the helpers run exactly the eager ops the DiT ran before (the
Triton kernels are tested on the GPU in ``test_decoder_fused_norms_cuda.py``), and ``DiT.set_fused_norms``
reaches every module that has a fused path; a device the Triton probe cannot run on keeps the torch ops."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from comfyui_step_audio_editx.engines.step_audio_editx.decoder import fused_norms, triton_support
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.config import DiTConfig
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.dit import DiT


def test_cpu_helpers_are_the_eager_ops():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 7, 32, generator=gen), torch.randn(2, 7, 32, generator=gen)
    shift, scale, gate = (torch.randn(1, 1, 32, generator=gen) for _ in range(3))
    weight, bias = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    assert not fused_norms.runs_fused(x)
    assert torch.equal(fused_norms.modulated_norm(x, shift, scale, 1e-6),
                       F.layer_norm(x, (32,), eps=1e-6) * (1 + scale) + shift)
    assert torch.equal(fused_norms.layer_norm(x, weight, bias, 1e-5), F.layer_norm(x, (32,), weight, bias, 1e-5))
    assert torch.equal(fused_norms.gated_add(x, gate, y), x + gate * y)
    strided = x.transpose(0, 1)  # a view, as the conv block hands its norm
    assert torch.equal(fused_norms.layer_norm(strided, weight, bias, 1e-5),
                       F.layer_norm(strided, (32,), weight, bias, 1e-5))
    pre = torch.randn(32, generator=gen)  # a conv's bias left to the norm, then Mish; a bias left to the add
    assert torch.equal(fused_norms.layer_norm(x, weight, bias, 1e-5, pre_bias=pre, mish=True),
                       F.mish(F.layer_norm(x + pre, (32,), weight, bias, 1e-5)))
    assert torch.equal(fused_norms.gated_add(x, gate, y, y_bias=pre), x + gate * (y + pre))


def test_set_fused_norms_reaches_every_fused_module():
    model = DiT(DiTConfig(in_channels=32, out_channels=8, mlp_ratio=2.0, depth=2, num_heads=2, head_dim=8,
                          hidden_size=16))
    flagged = [m for m in model.modules() if hasattr(m, "fused")]
    assert len(flagged) == 2 * 3 + 1 and all(m.fused for m in flagged)  # per block: itself, attention, conv
    model.set_fused_norms(False)
    assert not any(m.fused for m in flagged)


def test_no_triton_kernels_off_cuda():
    assert not triton_support.kernels_run_on(torch.device("cpu"))


@pytest.mark.skipif(triton_support.triton is None, reason="needs the triton package")
def test_a_device_the_probe_cannot_run_on_keeps_the_torch_ops(caplog):
    with caplog.at_level(logging.WARNING):  # Triton cannot launch on CPU tensors: the failure path of an old card
        assert triton_support._probe(torch.device("cpu")) is False
    assert "PyTorch's own ops run there instead" in caplog.text
