"""Quantized Step1 on the generation paths (CPU): the fused decode weights alias the modules' packed tensors,
the static decode session agrees with the plain loop, and the Triton kernels (run by Triton's CPU
interpreter in a subprocess) equal dequantize-then-matmul; the quality drift on the parity fixture."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import QuantLinear
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.linear import QuantMatrix
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import load_step1
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["int8", "int4"])
def quant_model(request, tiny_model_root):
    return load_step1(tiny_model_root / "Step-Audio-EditX", device="cpu", dtype="fp32", quantize=request.param)


def test_fused_decode_weights_alias_the_modules_packed_tensors(quant_model):
    weights = fuse_step1_projections(quant_model)
    layer = quant_model.model.layers[0]
    qkv = weights.qkv[0]
    assert isinstance(qkv, QuantMatrix)
    attn = layer.self_attn
    assert qkv.shape == (attn.q_proj.out_features + attn.k_proj.out_features + attn.v_proj.out_features,
                         attn.q_proj.in_features)
    assert attn.k_proj.weight_packed.untyped_storage().data_ptr() == qkv.packed.untyped_storage().data_ptr()
    assert attn.v_proj.weight_scale.untyped_storage().data_ptr() == qkv.scale.untyped_storage().data_ptr()
    again = fuse_step1_projections(quant_model)  # fusing twice makes no new copy
    assert again.qkv[0].data_ptr() == qkv.data_ptr() and again.gate_up[1].data_ptr() == weights.gate_up[1].data_ptr()
    assert torch.equal(weights.down[0].dequantized(), layer.mlp.down_proj.dequantized())


@pytest.mark.parametrize("config", [SamplingConfig(do_sample=False), SamplingConfig()], ids=["greedy", "sampled"])
def test_static_decode_session_matches_the_plain_loop(quant_model, config):
    gen = np.random.default_rng(3)
    prompts = [gen.integers(0, 65536 + 6000, size=n).tolist() for n in (37, 12, 50)]
    caps = [20, 9, 14]
    fast = generate(quant_model, prompts, caps, config, [0, 1, 2])
    plain = generate(quant_model, prompts, caps, config, [0, 1, 2], fast=False)
    assert fast[0].path.startswith("static")
    assert [f.tokens for f in fast] == [p.tokens for p in plain]
    assert all(len(f.tokens) > 0 for f in fast)


def test_quantized_modules_replace_exactly_the_seven_projections(quant_model):
    names = [n for n, m in quant_model.named_modules() if isinstance(m, QuantLinear)]
    assert len(names) == 7 * len(quant_model.model.layers)
    assert not isinstance(quant_model.lm_head, QuantLinear)
    assert quant_model.model.embed_tokens.weight.dtype == torch.float32


INTERPRETER_CHECK = textwrap.dedent("""
    import sys
    sys.path.insert(0, TESTS_DIR)
    from interpreted import allow_numpy2_scalars
    allow_numpy2_scalars()
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import kernels, format as fmt
    torch.manual_seed(0)
    worst = 0.0
    for bits in (4, 8):
        scheme = fmt.QuantScheme(bits, 128)
        # float32 scales: the interpreter truncates float32 -> bf16 casts, the GPU rounds them (GPU tests cover bf16)
        packed, scale = fmt.quantize(torch.randn(96, 512) * 0.02, scheme)
        w = fmt.dequantize(packed, scale, scheme, torch.float32)
        assert torch.equal(kernels.dequantize(packed, scale, scheme, torch.float32), w)
        norm = 1 + 0.1 * torch.randn(512)
        x, x3, gu, r = torch.randn(1, 512), torch.randn(3, 512), torch.randn(3, 1024), torch.randn(3, 96)
        cases = [
            (kernels.qgemv(x, packed, scale, scheme, (32, 256, 4, 1)), x @ w.T),
            (kernels.qgemv(x, packed, scale, scheme, (16, 128, 4, 1), norm_weight=norm, eps=1e-5),
             ref.rms_norm(x, norm, 1e-5) @ w.T),
            (kernels.qdot(x3, packed, scale, scheme, (32, 256, 4, 1)), x3 @ w.T),
            (kernels.qdot(gu, packed, scale, scheme, (32, 256, 4, 1), swiglu=True, residual=r.clone()),
             r + ref.silu_mul(gu) @ w.T),
        ]
        for got, want in cases:
            worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    print("WORST", worst)
""")


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"), reason="needs the triton package")
def test_triton_kernels_equal_dequantize_then_matmul_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    script = f"TESTS_DIR = {str(Path(__file__).parent)!r}\n" + INTERPRETER_CHECK
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    worst = float(done.stdout.split("WORST")[-1])
    assert worst < 1e-6  # float32 accumulation order only


def test_without_working_kernels_quant_layers_use_the_reference_path(monkeypatch):
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import kernels

    kernels.kernel_problem.cache_clear()
    assert kernels.kernel_problem("cpu") is not None  # no GPU Triton on the CPU: a reason, not an exception
    kernels.kernel_problem.cache_clear()
    tensor = torch.zeros(1, dtype=torch.int32)
    assert not kernels.available(tensor)
