"""The flow decoder's fused norms on the GPU against the eager ops they replace: the gated add equals
``x + gate * y`` bit for bit; the LayerNorms (plain + modulation, and the affine per-head one) agree with
``F.layer_norm`` up to the last bit of a few bf16 values (float32 sums in another order); a whole DiT
forward stays as close to the float32 model as the eager one; its causal conv runs in the [B, T, C] layout
(cuDNN's channels-last kernels, no layout conversions) and matches conv1d. Skips without CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from comfyui_step_audio_editx.engines.step_audio_editx.decoder import fused_norms, triton_support
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.config import DiTConfig
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.dit import (CausalConvBlock, DiT,
                                                                          causal_conv_channels_last)
from layer_cases import rand, rel

pytestmark = pytest.mark.skipif(fused_norms.triton is None or not torch.cuda.is_available(),
                                reason="needs CUDA and triton")
BF16_ULP = 2.0 ** -7  # one unit in the last place of a bf16 value in [1, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gated_add_equals_the_eager_ops(dtype):
    x, y = rand(6, 333, 512, seed=1, dtype=dtype), rand(6, 333, 512, seed=2, dtype=dtype)
    gate = rand(1, 1, 512, seed=3, dtype=dtype)
    assert torch.equal(fused_norms.gated_add(x, gate, y), x + gate * y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_modulated_norm_matches_layer_norm_then_modulation(dtype):
    x = rand(6, 333, 512, seed=4, dtype=dtype) * 3 + 1
    shift, scale = rand(1, 1, 512, seed=5, dtype=dtype), rand(1, 1, 512, seed=6, dtype=dtype) * 0.2
    got = fused_norms.modulated_norm(x, shift, scale, 1e-6)
    want = F.layer_norm(x, (512,), eps=1e-6) * (1 + scale) + shift
    normed = fused_norms.layer_norm(x, None, None, 1e-6)
    if dtype == torch.float32:
        assert rel(got, want) < 1e-6 and rel(normed, F.layer_norm(x, (512,), eps=1e-6)) < 1e-6
        return
    reference = F.layer_norm(x, (512,), eps=1e-6)
    assert (normed != reference).float().mean() < 0.01  # the rare last-bit flip, nothing more
    assert ((normed.float() - reference.float()).abs() <= BF16_ULP * reference.float().abs().clamp(min=1)).all()
    assert rel(got, want) < 3e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_head_norm_matches_affine_layer_norm(dtype):
    x = rand(4, 300, 8, 64, seed=7, dtype=dtype) * 2
    weight, bias = 1 + 0.1 * rand(64, seed=8, dtype=dtype), 0.1 * rand(64, seed=9, dtype=dtype)
    got = fused_norms.layer_norm(x, weight, bias, 1e-5)
    want = F.layer_norm(x, (64,), weight, bias, 1e-5)
    assert rel(got, want) < (1e-6 if dtype == torch.float32 else 2e-3)
    if dtype == torch.bfloat16:
        assert (got != want).float().mean() < 0.02


def test_dit_forward_with_fused_norms_stays_as_close_to_float32_as_eager():
    cfg = DiTConfig(in_channels=320, out_channels=80, mlp_ratio=4.0, depth=4, num_heads=8, head_dim=64, hidden_size=512)
    torch.manual_seed(0)
    model = DiT(cfg).cuda().eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-zero starts at zero: give every gate and modulation a value
            p.normal_(0, 0.05)
    inputs = [rand(4, 257, 80, seed=s, dtype=torch.float32) for s in (10, 11, 12)]
    spks = rand(4, 80, seed=13, dtype=torch.float32)
    t = torch.tensor([0.3], device="cuda")
    with torch.no_grad():
        want = model(inputs[0], inputs[1], spks, inputs[2], t)
        model16 = model.to(torch.bfloat16)
        outs = {}
        for fused in (False, True):
            model16.set_fused_norms(fused)
            outs[fused] = model16(inputs[0], inputs[1], spks, inputs[2], t).float()
    assert rel(outs[True], outs[False]) < 2e-2
    assert rel(outs[True], want) < 1.2 * rel(outs[False], want) + 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_channels_last_causal_conv_matches_conv1d_without_copies(dtype):
    x = rand(4, 333, 512, seed=20, dtype=dtype)
    conv = torch.nn.Conv1d(512, 512, 3).cuda().to(dtype)
    with torch.no_grad():
        want = conv(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            got = causal_conv_channels_last(x, conv.weight)
            torch.cuda.synchronize()
    assert got.shape == (4, 333, 512) and got.stride()[1:] == (512, 1)  # rows contiguous per entry: read in place
    got = got + conv.bias
    assert rel(got, want) < (2e-3 if dtype == torch.float32 else 1e-2)  # cuDNN may take TF32 in both
    assert rel(got[:, :1], want[:, :1]) < 1e-2  # the first frame sees the causal zeros, not the next frames
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert not [n for n in names if "nchwToNhwc" in n or "nhwcToNchw" in n], names
    assert sum("elementwise" in n for n in names) <= 1, names  # the filters' layout; nothing the size of x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_norm_and_gated_add_read_conv_views_and_take_the_bias_like_the_separate_ops(dtype):
    full = rand(3, 301, 512, seed=21, dtype=dtype) * 2
    view = full[:, :299]  # rows contiguous per entry, entries 301 rows apart: the conv's output view
    weight, bias = 1 + 0.1 * rand(512, seed=22, dtype=dtype), 0.1 * rand(512, seed=23, dtype=dtype)
    pre, gate = rand(512, seed=24, dtype=dtype), rand(1, 1, 512, seed=25, dtype=dtype)
    biased = view + pre  # PyTorch's separate bias add after cuDNN's conv
    got = fused_norms.layer_norm(view, weight, bias, 1e-5, pre_bias=pre, mish=True)
    want = F.mish(fused_norms.layer_norm(biased.contiguous(), weight, bias, 1e-5))
    assert got.is_contiguous() and torch.equal(got, want)
    x = rand(3, 299, 512, seed=26, dtype=dtype)
    assert torch.equal(fused_norms.gated_add(x, gate, view, y_bias=pre), x + gate * biased)
    assert torch.equal(fused_norms.gated_add(x, gate, view), x + gate * view)


def test_conv_block_fused_path_matches_the_eager_block():
    torch.manual_seed(1)
    block = CausalConvBlock(512).cuda().to(torch.bfloat16).eval()
    x = rand(4, 257, 512, seed=27)
    with torch.no_grad():
        fused = block(x)
        block.fused = False
        eager = block(x)
    assert rel(fused, eager) < 1e-2


def test_the_probe_lets_this_gpu_run_the_kernels():
    assert triton_support.kernels_run_on(torch.device("cuda"))
    assert triton_support.kernels_run_on(torch.device("cuda", torch.cuda.current_device()))
