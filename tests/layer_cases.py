"""What the GPU kernel tests share: seeded random tensors, the relative error they compare with, one
decode layer's matmul roles driven the way the decode step drives them (qkv from the normed residual,
then down from the SwiGLU product added into the residual) on full-width Step1 shapes, one quantized role with
each prologue against dequantize-then-matmul, a call replayed in a CUDA graph, and a small random bf16 Step1
whose rows run to their caps (for whole generations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_attention
from comfyui_step_audio_editx.engines.step_audio_editx.lm.attention import alibi_slopes
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import LinearChoice, ResidualStream
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import QuantScheme, dequantize, interleaved, quantize
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs

HIDDEN, QKV_ROWS, INNER = 3072, 3584, 8192  # Step1's width, fused q/k/v rows, MLP width
EPS = 1e-5
SHAPE = ref_ops.AttentionShape(num_heads=48, num_groups=4, head_dim=64)  # Step1's heads


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, device=device, dtype=torch.float32, generator=gen).to(dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


@dataclass
class QuantRoleCase:
    """One quantized role at Step1's width: ``out_features`` rows of interleaved words over HIDDEN columns (INNER
    for SwiGLU), the input, the prologue's kernel arguments ("norm", "swiglu", or "residual": x as it is, added
    into a residual) and dequantize-then-matmul's float32 result, residual included."""

    scheme: QuantScheme
    laid: torch.Tensor
    scale: torch.Tensor
    x: torch.Tensor
    kwargs: dict
    residual: torch.Tensor | None
    expected: torch.Tensor

    @classmethod
    def make(cls, bits: int, prologue: str, rows: int, dtype: torch.dtype = torch.bfloat16,
             out_features: int = QKV_ROWS, device: str = "cuda") -> "QuantRoleCase":
        scheme = QuantScheme(bits)
        cols = INNER if prologue == "swiglu" else HIDDEN  # SwiGLU: x = [gate | up], 2 x INNER wide
        packed, scale = quantize(rand(out_features, cols, seed=3, dtype=dtype, device=device) * 0.02, scheme)
        x = rand(rows, 2 * cols if prologue == "swiglu" else cols, seed=4, dtype=dtype, device=device)
        norm = 1 + 0.1 * rand(cols, seed=5, dtype=dtype, device=device)
        kwargs = {"norm": {"norm_weight": norm, "eps": EPS}, "swiglu": {"swiglu": True}, "residual": {}}[prologue]
        inputs = {"norm": lambda: ref_ops.rms_norm(x, norm, EPS), "swiglu": lambda: ref_ops.silu_mul(x),
                  "residual": lambda: x}[prologue]()
        expected = torch.nn.functional.linear(inputs.float(), dequantize(packed, scale, scheme).float())
        residual = rand(rows, out_features, seed=6, dtype=dtype, device=device) if prologue == "residual" else None
        if residual is not None:
            expected = expected + residual.float()
        return cls(scheme, interleaved.interleave(packed, scheme), scale, x, kwargs, residual, expected)

    def arguments(self) -> dict:
        """A kernel call's keyword arguments: the prologue's, and a fresh copy of the residual it adds into."""
        return {**self.kwargs, **({"residual": self.residual.clone()} if self.residual is not None else {})}


def replayed(run: Callable[[], torch.Tensor], replays: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``run()`` once eagerly (which also sizes any workspace before the capture), then captured in a CUDA graph
    and replayed: (the eager result, a copy of the output after each replay)."""
    eager = run()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    results = []
    for _ in range(replays):
        graph.replay()
        results.append(out.clone())
    return eager, results


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


@dataclass
class AttentionInputs:
    """One decode step's attention inputs: caches of ``cache`` slots, the fused qkv rows, per-row lengths (row
    1 does not run when there are more than two rows) and the ALiBi slopes."""

    keys: torch.Tensor
    values: torch.Tensor
    qkv: torch.Tensor
    kv_len: torch.Tensor
    slopes: torch.Tensor

    @classmethod
    def make(cls, lengths: list[int], cache: int, dtype: torch.dtype = torch.bfloat16) -> "AttentionInputs":
        rows = len(lengths)
        kv_len = torch.tensor(lengths, dtype=torch.int32, device="cuda")
        if rows > 2:
            kv_len[1] = 0  # a row that no longer runs
        return cls(rand(rows, SHAPE.num_groups, cache, SHAPE.head_dim, dtype=dtype, seed=4),
                   rand(rows, SHAPE.num_groups, cache, SHAPE.head_dim, dtype=dtype, seed=5),
                   rand(rows, (SHAPE.num_heads + 2 * SHAPE.num_groups) * SHAPE.head_dim, dtype=dtype, seed=6) * 3,
                   kv_len, alibi_slopes(SHAPE.num_heads, "cuda"))

    def reference(self) -> torch.Tensor:
        return ref_ops.decode_attention(self.qkv, self.keys.clone(), self.values.clone(), self.kv_len, self.slopes,
                                        SHAPE)

    def run(self, workspace, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, keys, values) of the Triton kernel on copies of the caches (it writes the new K/V)."""
        keys, values = self.keys.clone(), self.values.clone()
        out = triton_attention.decode_attention(self.qkv, keys, values, self.kv_len, self.slopes, SHAPE, workspace,
                                             **options)
        return out, keys, values


def small_step1(device: str = "cuda") -> Step1ForCausalLM:
    """A random bf16 Step1 of moderate width whose audio ids dominate (rows run to their caps)."""
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
