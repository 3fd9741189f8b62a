"""Fused projection weights for decoding: one [Q|K|V] and one [gate|up] matrix per layer, no extra memory.

At batch <= 16 a decode step is bound by reading the weights; seven small matmuls per layer cost more
than four larger ones (the K and V projections alone are 1.5 MB each, far below what a GPU streams
efficiently). ``fuse_step1_projections`` concatenates q/k/v and gate/up ONCE and re-points the model's
own ``q_proj.weight`` ... ``up_proj.weight`` at slices of the fused tensors: the state-dict keys and
values stay official, the plain forward still works, and no second copy of the weights exists.

Moving or casting the model (``model.to(...)``) turns the slices back into separate tensors; the next
``fuse_step1_projections`` call fuses them again (``Step1ForCausalLM._apply`` drops the decode state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..constants import EOT_ID, VQ02_FIRST_ID, VQ06_LAST_ID
from .attention import alibi_slopes
from .decode_ops import AttentionShape
from .quant.linear import QuantLinear, QuantMatrix, interleave_for_kernels, use_tinygemm


@dataclass
class DecodeWeights:
    """Everything a decode step reads, per layer lists; the fused matrices alias the model's parameters."""

    embed: torch.Tensor  # [V, C]
    input_norms: list[torch.Tensor]  # [C] each
    post_norms: list[torch.Tensor]
    final_norm: torch.Tensor
    qkv: list[torch.Tensor | QuantMatrix]  # [(H + 2G) * D, C]
    o: list[torch.Tensor | QuantMatrix]  # [C, H * D]
    gate_up: list[torch.Tensor | QuantMatrix]  # [2I, C]
    down: list[torch.Tensor | QuantMatrix]  # [C, I]
    head: torch.Tensor  # lm_head [V, C]
    eps: float
    shape: AttentionShape
    slopes: torch.Tensor  # [H] float32

    @property
    def num_layers(self) -> int:
        return len(self.qkv)

    def fingerprint(self) -> tuple[int, ...]:
        return fingerprint_of(self.embed, self.head, *self.qkv, *self.gate_up, *self.o, *self.down)


def fingerprint_of(*tensors: torch.Tensor | QuantMatrix) -> tuple[int, ...]:
    return tuple(t.data_ptr() for t in tensors)


def projection_tensor(module: nn.Module) -> torch.Tensor:
    """The tensor that identifies a projection's weights: ``weight``, or a ``QuantLinear``'s packed words."""
    return module.weight_packed if isinstance(module, QuantLinear) else module.weight


def _fused_view(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """The [sum(rows), cols] tensor the ``parts`` are consecutive row blocks of, or None if they are not."""
    first = parts[0]
    if any(p.dim() != 2 or not p.is_contiguous() for p in parts):
        return None
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    cols = first.shape[1]
    for part in parts:
        if (part.untyped_storage().data_ptr() != storage or part.storage_offset() != offset
                or part.shape[1] != cols or part.dtype != first.dtype):
            return None
        offset += part.numel()
    rows = sum(p.shape[0] for p in parts)
    return torch.as_strided(first.detach(), (rows, cols), (cols, 1), first.storage_offset())


def _fuse_quant(modules: list[QuantLinear], tinygemm: bool) -> QuantMatrix:
    """``_fuse`` for quantized projections: packed words and scales are concatenated by rows alike, then laid
    out for the kernels that run them (``_laid_out``)."""
    if modules[0].source is not None:
        return modules[0].source[0]
    if len({m.interleaved for m in modules}) != 1:
        raise ValueError("a fused matrix mixes interleaved and stored projections")
    packed = _fused_view([m.weight_packed for m in modules])
    scales = _fused_view([m.weight_scale for m in modules])
    if packed is None or scales is None:
        packed = torch.cat([m.weight_packed for m in modules], dim=0)
        scales = torch.cat([m.weight_scale for m in modules], dim=0)
        start = 0
        for module in modules:
            rows = module.out_features
            module.set_tensors(packed[start:start + rows], scales[start:start + rows])
            start += rows
    return _laid_out(modules, QuantMatrix(packed, scales, modules[0].scheme, modules[0].interleaved), tinygemm)


def _laid_out(modules: list[QuantLinear], matrix: QuantMatrix, tinygemm: bool) -> QuantMatrix:
    """int4 q/k/v, o and down in PyTorch's tinygemm layout where it runs (bf16 on Ampere+, ``quant.tinygemm``),
    gate_up interleaved for our Triton kernels. One matrix has one layout for every batch size; measured per
    role on the H200 (``bench/bench_quant_kernels.py``, 2026-12-04, us at 1 / 2 / 8 / 16 rows): down tinygemm
    9.6 / 10.3 / 18.6 / 31.9 against ours 15.2 / 29.6 / 29.7 / 29.9; o 4.8 / 5.2 / 8.3 / 13.2 against 5.9 /
    10.8 / 12.6 / 12.7; q/k/v 6.0 / 6.2 / 10.8 / 16.7 (plus a norm kernel, which the fused GEMV's path pays as
    a residual add) against 8.1 / 13.8 / 14.7 / 14.7; gate_up 16.1 / 16.8 / 35.9 / 59.3 against 18.1 / 34.6 /
    43.2 / 44.9: it stays ours, or batches of 16 would lose 14 us per layer."""
    if tinygemm:
        matrix = use_tinygemm(modules, matrix, torch.bfloat16)
    return matrix if matrix.scales_zeros is not None else interleave_for_kernels(modules, matrix)


def _single(module: nn.Module, tinygemm: bool = False) -> torch.Tensor | QuantMatrix:
    if isinstance(module, QuantLinear):
        return module.source[0] if module.source is not None else _laid_out([module], module.matrix, tinygemm)
    return module.weight.detach()


def _fuse(modules: list[nn.Module], tinygemm: bool = False) -> torch.Tensor | QuantMatrix:
    """Concatenate the modules' weights (unless already adjacent) and point each weight at its slice."""
    if all(isinstance(m, QuantLinear) for m in modules) and len({m.scheme for m in modules}) == 1:
        return _fuse_quant(modules, tinygemm)
    if any(isinstance(m, QuantLinear) for m in modules):
        raise ValueError("a layer mixes quantized and float projections (or schemes) that decode fuses together")
    weights = [m.weight for m in modules]
    fused = _fused_view(weights)
    if fused is not None:
        return fused
    with torch.no_grad():
        fused = torch.cat([w.detach() for w in weights], dim=0)
    start = 0
    for module, weight in zip(modules, weights):
        rows = weight.shape[0]
        module.weight = nn.Parameter(fused[start:start + rows], requires_grad=weight.requires_grad)
        start += rows
    return fused


def fuse_step1_projections(model) -> DecodeWeights:
    """Fuse q/k/v and gate/up of every layer of a ``Step1ForCausalLM`` in place; return the decode view."""
    decoder = model.model
    config = model.config
    qkv, o, gate_up, down, input_norms, post_norms = [], [], [], [], [], []
    bf16 = decoder.embed_tokens.weight.dtype == torch.bfloat16  # tinygemm takes bf16 activations only
    for layer in decoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv.append(_fuse([attn.q_proj, attn.k_proj, attn.v_proj], tinygemm=bf16))
        gate_up.append(_fuse([mlp.gate_proj, mlp.up_proj]))
        o.append(_single(attn.o_proj, tinygemm=bf16))
        down.append(_single(mlp.down_proj, tinygemm=bf16))  # see ``_laid_out``
        input_norms.append(layer.input_layernorm.weight.detach())
        post_norms.append(layer.post_attention_layernorm.weight.detach())
    shape = AttentionShape(config.num_attention_heads, config.num_attention_groups, config.head_dim)
    embed = decoder.embed_tokens.weight.detach()
    return DecodeWeights(
        embed=embed, input_norms=input_norms, post_norms=post_norms, final_norm=decoder.norm.weight.detach(),
        qkv=qkv, o=o, gate_up=gate_up, down=down, head=model.lm_head.weight.detach(), eps=config.rms_norm_eps,
        shape=shape, slopes=alibi_slopes(shape.num_heads, embed.device),
    )


def audio_vocab_ids(vocab_size: int, device: torch.device | str) -> torch.Tensor | None:
    """The ids the audio constraint can ever allow (<|EOT|>, then every vq02 and vq06 id), sorted; None when
    the vocabulary has no audio ids (a text-only test model)."""
    if vocab_size <= VQ06_LAST_ID:
        return None
    audio = torch.arange(VQ02_FIRST_ID, VQ06_LAST_ID + 1, device=device, dtype=torch.int64)
    return torch.cat([torch.tensor([EOT_ID], device=device, dtype=torch.int64), audio])


def audio_head(head: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
    """The lm_head rows of ``vocab_ids`` as one contiguous matrix [V', C] (31 MB for the full model)."""
    return head.index_select(0, vocab_ids).contiguous()
