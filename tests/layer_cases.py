"""What the GPU kernel tests share: seeded random tensors, the relative error they compare with, and one
decode layer's matmul roles driven the way the decode step drives them (qkv from the normed residual,
then down from the SwiGLU product added into the residual), on full-width Step1 shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import LinearChoice, ResidualStream

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
