"""What the GPU kernel tests share: seeded random tensors, the relative error they compare with, and one
decode layer's matmul roles driven the way the decode step drives them (qkv from the normed residual,
then down from the SwiGLU product added into the residual), on full-width Step1 shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import (
    LinearChoice,
    ResidualStream,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import (
    Step1Config,
    Step1ForCausalLM,
)
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs

HIDDEN, QKV_ROWS, INNER = 3072, 3584, 8192  # Step1's width, fused q/k/v rows, MLP width
EPS = 1e-5


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, device=device, dtype=torch.float32, generator=gen).to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


@dataclass
class LayerInputs:
    """The residual, the RMSNorm weight and the gate/up activations of one layer at ``rows`` rows."""

    resid: torch.Tensor
    norm: torch.Tensor
    gate_up: torch.Tensor

    @classmethod
    def make(cls, rows: int, device: str = "cuda") -> "LayerInputs":
        return cls(rand(rows, HIDDEN, seed=9, device=device), 1 + 0.1 * rand(HIDDEN, seed=10, device=device),
                   rand(rows, 2 * INNER, seed=11, device=device))

    def run(self, qkv, down, choice: LinearChoice, use_triton: bool = True,
            pdl: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(qkv output, residual after down, RMSNorm of that residual) from a copy of the residual; the last
        norm also flushes a pending cuBLAS delta into the residual."""
        stream = ResidualStream(self.resid.clone(), EPS, use_triton=use_triton, pdl=pdl)
        projected = stream.normed_linear(self.norm, qkv, choice)
        stream.residual_linear(self.gate_up, down, choice, swiglu=True)
        normed = stream.norm(self.norm)
        return projected, stream.resid, normed


def small_bf16_step1(device: str = "cuda") -> Step1ForCausalLM:
    """A random bf16 Step1 of moderate width whose audio ids dominate (rows run to their caps): the model of
    the GPU tests that compare whole generations token for token."""
    torch.manual_seed(0)
    dims = dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_attention_groups=4,
                num_hidden_layers=6, vocab_size=C.TEXT_VOCAB_SIZE)
    with torch.device(device):
        model = Step1ForCausalLM._from_config(Step1Config(**dims), attn_implementation="sdpa",
                                              **dtype_kwargs(torch.bfloat16))
    model = model.eval().requires_grad_(False)
    with torch.no_grad():
        model.lm_head.weight[C.VQ02_FIRST_ID:C.VQ06_LAST_ID + 1] *= 8.0
        model.lm_head.weight[C.EOT_ID] = 0.0
    return model
