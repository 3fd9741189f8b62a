"""Weight-only integer quantization in the compressed-tensors ``pack-quantized`` layout (our own code).

Why this layout: StepFun's ``Step-Audio-EditX-AWQ-4bit`` stores it, so the official file loads without a
copy, and our quantize-on-load produces the same thing, so one set of kernels serves both.

The layout, as the compressed-tensors library writes it (verified against its ``pack_to_int32`` /
``unpack_from_int32`` and ``_dequantize``, and by ``tests/test_quant_format.py`` on a file it wrote):

* ``weight_packed`` int32 [N, K * bits / 32]: along each row, element ``e`` sits at bit ``e * bits`` of the
  row's bit stream, i.e. for 4 bits word ``j`` holds elements ``8j .. 8j+7``, element ``8j+i`` in bits
  ``4i .. 4i+3`` (for 8 bits: 4 per word). Each value is stored unsigned, offset by ``2^(bits-1)``.
* ``weight_scale`` [N, K / group] in the model dtype (bf16); symmetric, so no ``weight_zero_point``.
* ``weight_shape`` int [2] = (N, K).
* Dequantized weight = ``q.to(scale.dtype) * scale`` (one rounding to the scale dtype).

Quantizing (round to nearest, symmetric, per group): ``scale = absmax(group) / ((2^bits - 1) / 2)`` (a zero
scale becomes the dtype's eps), ``q = clamp(round(w / scale), -2^(bits-1), 2^(bits-1) - 1)``: the same
rule compressed-tensors applies when it computes a scale from a group's min/max itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WORD_BITS = 32  # weights are packed into int32 words
SUPPORTED_BITS: tuple[int, ...] = (4, 8)
DEFAULT_GROUP_SIZE = 128
QUANTIZE_ROW_CHUNK = 1024  # rows quantized / dequantized at a time by the torch paths (bounds temporaries)


class QuantFormatError(ValueError):
    """Quantized tensors or a quantization config this loader cannot read."""


@dataclass(frozen=True)
class QuantScheme:
    """Symmetric integer weights of ``bits`` bits with one scale per ``group_size`` input columns."""

    bits: int = 4
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise QuantFormatError(f"{self.bits}-bit weights are not supported (only {SUPPORTED_BITS}).")
        if self.group_size <= 0 or self.group_size % (WORD_BITS // self.bits):
            raise QuantFormatError(f"group size {self.group_size} must be a positive multiple of "
                                   f"{WORD_BITS // self.bits} for {self.bits}-bit weights.")

    @property
    def per_word(self) -> int:
        return WORD_BITS // self.bits

    @property
    def words_per_group(self) -> int:
        return self.group_size // self.per_word

    @property
    def offset(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def qmin(self) -> int:
        return -self.offset

    @property
    def qmax(self) -> int:
        return self.offset - 1

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def check_shape(self, out_features: int, in_features: int) -> None:
        if in_features % self.group_size:
            raise QuantFormatError(f"{in_features} input columns are not a multiple of the group size "
                                   f"{self.group_size}.")

    def packed_cols(self, in_features: int) -> int:
        return in_features // self.per_word

    def scale_cols(self, in_features: int) -> int:
        return in_features // self.group_size


GROUP_SIZE_CHOICES: tuple[int, ...] = (DEFAULT_GROUP_SIZE, 64, 32, 16)  # smaller only for small test models


def require_row_major(packed: torch.Tensor, scale: torch.Tensor) -> None:
    """The kernels index packed words and scales by a row stride and unit column steps."""
    if packed.stride(1) != 1 or scale.stride(1) != 1:
        raise ValueError("packed weights and scales must be row-major")


def scale_dtype(stored: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """The dtype scales are kept in: the checkpoint's own (bf16), so ``q * scale`` rounds exactly as
    compressed-tensors decodes it, also when the model computes in fp32; fp16 when the model runs in fp16
    (GPUs without bf16 arithmetic)."""
    return torch.float16 if compute == torch.float16 else stored


def scheme_for_columns(bits: int, in_features: int) -> QuantScheme:
    """The scheme for quantizing a matrix with ``in_features`` columns on load: group 128 (every Step1 matrix),
    else the largest smaller group that divides the columns."""
    for group in GROUP_SIZE_CHOICES:
        if in_features % group == 0:
            return QuantScheme(bits, group)
    raise QuantFormatError(f"{in_features} input columns are not a multiple of {GROUP_SIZE_CHOICES[-1]}: "
                           "cannot quantize per group.")


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 values [N, K] in the signed range -> int32 words [N, K * bits / 32] (layout above)."""
    per_word = WORD_BITS // bits
    rows, cols = q.shape
    if cols % per_word:
        raise QuantFormatError(f"{cols} columns do not fill whole {WORD_BITS}-bit words at {bits} bits.")
    unsigned = (q.to(torch.int32) + (1 << (bits - 1))).view(rows, cols // per_word, per_word)
    words = torch.zeros(rows, cols // per_word, dtype=torch.int32, device=q.device)
    for i in range(per_word):
        words |= unsigned[:, :, i] << (bits * i)  # wraps into the sign bit for the top element: intended
    return words


def unpack(words: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 words [N, W] -> signed int8 values [N, W * 32 / bits]."""
    per_word = WORD_BITS // bits
    mask = (1 << bits) - 1
    shifts = torch.arange(0, WORD_BITS, bits, device=words.device, dtype=torch.int32)
    values = (words.unsqueeze(-1) >> shifts) & mask  # arithmetic shift, then masked: exact for every field
    return (values - (1 << (bits - 1))).to(torch.int8).reshape(words.shape[0], words.shape[1] * per_word)


def group_scales(weight: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Per-group scales [N, K / group] in the weight's dtype (the compressed-tensors rule)."""
    rows, cols = weight.shape
    scheme.check_shape(rows, cols)
    grouped = weight.reshape(rows, cols // scheme.group_size, scheme.group_size)
    absmax = grouped.abs().amax(dim=-1)
    scales = absmax / torch.tensor((2 ** scheme.bits - 1) / 2, dtype=weight.dtype, device=weight.device)
    eps = torch.finfo(weight.dtype).eps
    return torch.where(scales == 0, torch.tensor(eps, dtype=scales.dtype, device=scales.device), scales)


def quantize(weight: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """A float weight [N, K] -> (packed int32 [N, K*bits/32], scales [N, K/group] in the weight's dtype)."""
    rows, cols = weight.shape
    scheme.check_shape(rows, cols)
    packed = torch.empty(rows, scheme.packed_cols(cols), dtype=torch.int32, device=weight.device)
    scales = torch.empty(rows, scheme.scale_cols(cols), dtype=weight.dtype, device=weight.device)
    for start in range(0, rows, QUANTIZE_ROW_CHUNK):
        part = weight[start:start + QUANTIZE_ROW_CHUNK]
        s = group_scales(part, scheme)
        grouped = part.reshape(part.shape[0], -1, scheme.group_size)
        q = torch.round(grouped / s.unsqueeze(-1)).clamp_(scheme.qmin, scheme.qmax).to(torch.int8)
        packed[start:start + part.shape[0]] = pack(q.reshape(part.shape[0], cols), scheme.bits)
        scales[start:start + part.shape[0]] = s
    return packed, scales


def dequantize(packed: torch.Tensor, scales: torch.Tensor, scheme: QuantScheme,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """(packed, scales) -> the float weight [N, K]: ``q.to(scale dtype) * scale``, then cast to ``dtype``."""
    rows = packed.shape[0]
    cols = packed.shape[1] * scheme.per_word
    out = torch.empty(rows, cols, dtype=dtype or scales.dtype, device=packed.device)
    for start in range(0, rows, QUANTIZE_ROW_CHUNK):
        q = unpack(packed[start:start + QUANTIZE_ROW_CHUNK], scheme.bits)
        s = scales[start:start + QUANTIZE_ROW_CHUNK]
        w = q.to(s.dtype).view(q.shape[0], -1, scheme.group_size) * s.unsqueeze(-1)
        out[start:start + q.shape[0]] = w.view(q.shape[0], cols)
    return out
