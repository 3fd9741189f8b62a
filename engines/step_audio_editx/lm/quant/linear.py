"""``QuantLinear``: a bias-free linear layer whose weight is stored packed (``format``), and swapping it in.

Why a module: the Step1 forward (prefill, the plain decode path) calls ``self.q_proj(x)`` etc., so replacing
the seven projection ``nn.Linear`` of each layer is all the model needs; the buffers keep the
compressed-tensors names (``weight_packed``, ``weight_scale``), so ``state_dict()`` keys are the official
file's. lm_head and the embedding stay in the model dtype (the official AWQ file leaves them so too).

Forward: a few rows on CUDA with Triton run the fused dequantizing kernels (``kernels``, or ``interleaved``
once the decode session re-laid the words out for its kernels); otherwise the weight is dequantized
(``q * scale`` in the model dtype) and multiplied with ``F.linear``, so the CPU, MPS and no-Triton results
are exactly dequantize-then-matmul. Interleaved words are given back in the stored layout by
``state_dict()``, so saved tensors are always compressed-tensors'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import interleaved, kernels, tinygemm
from .format import QuantScheme, dequantize, quantize, scale_dtype, scheme_for_columns

INTERLEAVED_BITS: tuple[int, ...] = (4, 8)  # widths the decode session lays out for ``interleaved``'s kernels

# The seven projections of a Step1 layer that are quantized (relative to ``model.layers.{i}``).
QUANT_TARGETS: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class QuantMatrix:
    """A packed weight as the decode step sees it (possibly several projections fused by rows)."""

    packed: torch.Tensor  # int32 [N, K * bits / 32]
    scale: torch.Tensor  # [N, K / group]
    scheme: QuantScheme
    interleaved: bool = False  # words in ``interleaved``'s layout (else the stored one)
    scales_zeros: torch.Tensor | None = None  # set: the words are laid out for tinygemm (``tinygemm``)

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.packed.shape[1] * self.scheme.per_word

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    def data_ptr(self) -> int:
        return self.packed.data_ptr()

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        if self.scales_zeros is not None:
            return tinygemm.dequantize(self.packed, self.scales_zeros, self.scheme).to(dtype or self.scale.dtype)
        if kernels.available(self.packed):
            fn = interleaved.dequantize if self.interleaved else kernels.dequantize
            return fn(self.packed, self.scale, self.scheme, dtype)
        return dequantize(self.stored_words(), self.scale, self.scheme, dtype)

    def stored_words(self) -> torch.Tensor:
        """The words in the stored (compressed-tensors) layout (a copy unless stored so)."""
        if self.scales_zeros is not None:
            return tinygemm.stored_words(self.packed, self.scheme)
        return interleaved.deinterleave(self.packed, self.scheme) if self.interleaved else self.packed

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T``: tinygemm for its layout, else dequantize-then-matmul (the reference every kernel is
        compared with)."""
        if self.scales_zeros is not None and x.dtype == torch.bfloat16:
            return tinygemm.linear(x, self.packed, self.scales_zeros, self.scheme)
        return F.linear(x, self.dequantized(x.dtype))


class QuantLinear(nn.Module):
    """``y = x @ dequantize(weight_packed, weight_scale)^T``; no bias."""

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, dtype: torch.dtype,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        scheme.check_shape(out_features, in_features)
        self.in_features = in_features
        self.out_features = out_features
        self.scheme = scheme
        self.register_buffer("weight_packed", torch.empty(out_features, scheme.packed_cols(in_features),
                                                          dtype=torch.int32, device=device))
        self.register_buffer("weight_scale", torch.empty(out_features, scheme.scale_cols(in_features),
                                                         dtype=dtype, device=device))
        self.interleaved = False  # weight_packed holds interleaved words (set by ``interleave_for_kernels``)
        # (tinygemm-laid matrix, first row): the words live there (``use_tinygemm``); the buffer is a slice of it
        self.source: tuple[QuantMatrix, int] | None = None
        self.own_scales_zeros: torch.Tensor | None = None  # this projection's columns of a fused matrix's scales
        self._register_state_dict_hook(_stored_words_hook)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: QuantScheme) -> "QuantLinear":
        """Quantize a float ``nn.Linear`` (round to nearest, per-group scales) on its own device."""
        weight = linear.weight.detach()
        module = cls(weight.shape[1], weight.shape[0], scheme, weight.dtype, device="meta")
        packed, scale = quantize(weight, scheme)
        module.set_tensors(packed, scale.to(scale_dtype(scale.dtype, weight.dtype)))
        return module

    def set_tensors(self, packed: torch.Tensor, scale: torch.Tensor) -> None:
        """Point the buffers at (packed, scale) without copying (both checked against the shape)."""
        want_p = (self.out_features, self.scheme.packed_cols(self.in_features))
        want_s = (self.out_features, self.scheme.scale_cols(self.in_features))
        if tuple(packed.shape) != want_p or packed.dtype != torch.int32:
            raise ValueError(f"weight_packed must be int32 {list(want_p)}, got {packed.dtype} {list(packed.shape)}")
        if tuple(scale.shape) != want_s or not scale.is_floating_point():
            raise ValueError(f"weight_scale must be float {list(want_s)}, got {scale.dtype} {list(scale.shape)}")
        self.weight_packed = packed  # in the layout ``interleaved`` says (unchanged here)
        self.weight_scale = scale

    @property
    def dtype(self) -> torch.dtype:
        return self.weight_scale.dtype

    @property
    def matrix(self) -> QuantMatrix:
        if self.source is not None:
            if self.source[0].shape[0] != self.out_features:
                raise ValueError("this projection's words are part of a fused tinygemm matrix: use .source")
            return self.source[0]
        return QuantMatrix(self.weight_packed, self.weight_scale, self.scheme, self.interleaved)

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight [out, in] this layer multiplies with."""
        if self.source is not None:
            matrix, start = self.source
            return matrix.dequantized(dtype)[start:start + self.out_features]
        return self.matrix.dequantized(dtype)

    def stored_words(self) -> torch.Tensor:
        if self.source is not None:
            matrix, start = self.source
            return matrix.stored_words()[start:start + self.out_features]
        return self.matrix.stored_words()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.source is not None and x.dtype == torch.bfloat16:  # any rows: tinygemm beats dequantizing it
            matrix, start = self.source
            if self.own_scales_zeros is None:
                return matrix.linear(x)[..., start:start + self.out_features]
            # a part of a fused matrix (q of q/k/v): its own 8-row tiles only
            return tinygemm.linear(x, matrix.packed[start:start + self.out_features], self.own_scales_zeros,
                                   self.scheme)
        if self.source is None and rows <= kernels.MAX_KERNEL_ROWS and kernels.available(self.weight_packed):
            flat = x.reshape(rows, self.in_features).contiguous()
            if self.interleaved:
                fn, config = (interleaved.gemv, interleaved.DEFAULT_GEMV) if rows == 1 else \
                    (interleaved.dot, interleaved.DEFAULT_DOT)
                out = fn(flat, self.weight_packed, self.weight_scale, self.scheme, config)
            else:
                out = kernels.quant_linear(flat, self.weight_packed, self.weight_scale, self.scheme)
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.dequantized(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self.scheme.name}, "
                f"group={self.scheme.group_size}{', interleaved' if self.interleaved else ''}")


def _stored_words_hook(module: QuantLinear, state: dict, prefix: str, local_metadata) -> None:
    """``state_dict()`` holds the stored layout even while the buffer is interleaved."""
    if module.interleaved or module.source is not None:
        state[prefix + "weight_packed"] = module.stored_words()


def interleave_for_kernels(modules: list[QuantLinear], matrix: QuantMatrix) -> QuantMatrix:
    """Re-lay int4 / int8 ``matrix`` (the packed words of ``modules``, fused by rows or one module's) out in
    place for the interleaved kernels when they run on its device; flags the modules so every reader knows.
    Idempotent. int8 too since the group-major GEMV (``group_gemv``): on the H200 its decode runs 502 tokens/s
    at batch 1 against 369 in the stored layout, 1-2 % slower at batches 8 / 16 (``bench/bench_quant.py``)."""
    if matrix.scheme.bits not in INTERLEAVED_BITS:
        return matrix
    if matrix.interleaved or not interleaved.fits(matrix.packed) or not kernels.available(matrix.packed) or \
            interleaved.kernel_problem(str(matrix.packed.device)) is not None:
        return matrix
    if any(m.interleaved for m in modules):
        raise ValueError("a fused matrix mixes interleaved and stored projections")
    interleaved.interleave(matrix.packed, matrix.scheme, out=matrix.packed)
    for module in modules:
        module.interleaved = True
    return QuantMatrix(matrix.packed, matrix.scale, matrix.scheme, True)


def use_tinygemm(modules: list[QuantLinear], matrix: QuantMatrix, dtype: torch.dtype) -> QuantMatrix:
    """Re-lay ``matrix`` (stored words of ``modules``, fused by rows or one module's) out in place for
    PyTorch's int4 matmul where it can hold it (``dtype``: the activations'); the modules then read their
    words from it. Idempotent."""
    if modules[0].source is not None:
        return modules[0].source[0]
    if dtype != torch.bfloat16 or matrix.interleaved or any(m.interleaved for m in modules) or not tinygemm.eligible(
            matrix.packed, matrix.scale, matrix.scheme):
        return matrix
    laid = QuantMatrix(matrix.packed, matrix.scale, matrix.scheme,
                       scales_zeros=tinygemm.convert_(matrix.packed, matrix.scale, matrix.scheme))
    start = 0
    for module in modules:
        module.source = (laid, start)
        if len(modules) > 1 and tinygemm.row_sliceable(start, module.out_features):
            module.own_scales_zeros = laid.scales_zeros[:, start:start + module.out_features].contiguous()
        start += module.out_features
    return laid


def restore_stored_words_(model) -> None:
    """Give every tinygemm-laid projection of ``model`` its stored words back, in place (before the model
    moves or changes dtype: tinygemm's layout lives on one GPU)."""
    done: set[int] = set()
    for module in quant_modules(model).values():
        if module.source is None:
            continue
        matrix, _ = module.source
        if id(matrix) not in done:
            done.add(id(matrix))
            matrix.packed.copy_(matrix.stored_words())
        module.source = None
        module.own_scales_zeros = None


def quant_modules(model) -> dict[str, QuantLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def quantize_step1_(model, bits: int, progress=None) -> None:
    """Replace every layer's projections of a loaded float ``Step1ForCausalLM`` by ``QuantLinear`` in place,
    freeing each float weight as soon as its quantized copy exists (peak: the model plus one matrix)."""
    for layer in model.model.layers:
        for target in QUANT_TARGETS:
            parent_name, _, child = target.rpartition(".")
            parent = layer.get_submodule(parent_name)
            linear = getattr(parent, child)
            if isinstance(linear, QuantLinear):
                continue
            setattr(parent, child, QuantLinear.from_linear(linear, scheme_for_columns(bits, linear.in_features)))
            linear.weight = None  # drop the float tensor now, not when the loop ends
        if progress is not None:
            progress()


def replace_with_empty_quant_linears(model, scheme: QuantScheme, dtype: torch.dtype, layers: set[int] | None = None,
                                     targets: tuple[str, ...] = QUANT_TARGETS, per_columns: bool = False) -> None:
    """Swap the named projections of a (meta) Step1 for empty ``QuantLinear`` of ``scheme`` (the loader then
    points their buffers at the checkpoint's tensors). ``per_columns``: the group size follows each matrix's
    columns (``scheme_for_columns``), as quantizing on load does."""
    for index, layer in enumerate(model.model.layers):
        if layers is not None and index not in layers:
            continue
        for target in targets:
            parent_name, _, child = target.rpartition(".")
            parent = layer.get_submodule(parent_name)
            linear = getattr(parent, child)
            own = scheme_for_columns(scheme.bits, linear.in_features) if per_columns else scheme
            setattr(parent, child, QuantLinear(linear.in_features, linear.out_features, own, dtype, device="meta"))
