"""PyTorch's own int4 matmul (``torch._weight_int4pack_mm``, "tinygemm") for the int4 decode role it wins.

Why: measured on the H200 (``bench/bench_quant_kernels.py``), it runs the down projection in 9.6 us against
our Triton GEMV's 20.7 at batch 1 (31.9 against 59.0 at batch 16); ``fused_weights._laid_out`` says why the
other roles stay ours. Its weight layout is its own (``_convert_weight_to_int4pack``: tiles of 8 rows, the
outermost dimension, each tile's bytes those of its 8 rows of words), so the decode session converts the
matrix ONCE, in place (same bytes as the packed words), and the projection reads its words from there
(``QuantLinear.source``; the plain forward, prefill included, calls tinygemm too: dequantizing this layout
costs a matmul). A part of a fused matrix (q of q/k/v) multiplies only its own row tiles, with its own copy
of its scales (tinygemm takes them contiguous).

Exactness: symmetric int4 is tinygemm's ``(q - 8) * scale + zero`` with zero 0, q the stored unsigned
field; its products round like the reference's (checked on the device by ``tests/test_quant_cuda.py``).
The stored words are recovered exactly, whatever tinygemm's rounding: multiplying the identity with
scales 1 and zeros 0 gives ``q - 8`` as small integers, packed again (``stored_words``).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .format import QuantScheme, dequantize as format_dequantize, pack, quantize as format_quantize, unpack
from ...kernel_probe import run_probe


INNER_K_TILES = 8  # tinygemm's k-tiling (2, 4 or 8); 8 is its fastest for K multiple of 128
GROUPS = (32, 64, 128, 256)  # group sizes tinygemm supports
ROW_TILE = 8
MIDPOINT = 8  # tinygemm's w = (q - 8) * scale + zero
RECOVER_COLUMNS = 4096  # identity columns per recovery matmul (bounds the temporary)
PROBE_SHAPE = (256, 1024)
PROBE_TOLERANCE = 1e-2  # relative error of the probe matmul against dequantize-then-matmul
PROBE_ROWS = (1, 16)


@lru_cache(maxsize=None)
def _device_ok(device: str) -> bool:
    """tinygemm exists in this torch, the GPU is Ampere or newer, and a probe round-trips exactly and
    multiplies like dequantize-then-matmul (else the Triton kernels keep every role)."""
    if not (hasattr(torch, "_weight_int4pack_mm") and hasattr(torch, "_convert_weight_to_int4pack")):
        return False
    if torch.cuda.get_device_capability(torch.device(device)) < (8, 0):
        return False

    def probe() -> None:
        scheme = QuantScheme(4)
        gen = torch.Generator(device=device).manual_seed(0)
        weight = torch.randn(*PROBE_SHAPE, device=device, generator=gen).to(torch.bfloat16)
        packed, scale = format_quantize(weight, scheme)
        laid = packed.clone()
        scales_zeros = convert_(laid, scale, scheme)
        if not torch.equal(stored_words(laid, scheme), packed):
            raise ValueError("the stored words do not round-trip")
        reference = format_dequantize(packed, scale, scheme).float()
        for rows in PROBE_ROWS:
            x = torch.randn(rows, PROBE_SHAPE[1], device=device, generator=gen).to(torch.bfloat16)
            want = x.float() @ reference.T
            if float((linear(x, laid, scales_zeros, scheme).float() - want).norm() / want.norm()) > PROBE_TOLERANCE:
                raise ValueError("its matmul disagrees with dequantize-then-matmul")

    return run_probe(device, "PyTorch's int4 matmul (tinygemm)", "the Triton kernels keep every role", probe) is None


def eligible(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme) -> bool:
    """Whether tinygemm can hold this matrix: int4 on an Ampere+ GPU, bf16 scales, its tile sizes."""
    n, k = packed.shape[0], packed.shape[1] * scheme.per_word
    return (packed.is_cuda and scheme.bits == 4 and scheme.group_size in GROUPS and scale.dtype == torch.bfloat16
            and n % ROW_TILE == 0 and k % (16 * INNER_K_TILES) == 0 and _device_ok(str(packed.device)))


def row_sliceable(start: int, rows: int) -> bool:
    """Whether rows ``start .. start + rows`` of a tinygemm-laid matrix are whole tiles (a view of its words)."""
    return start % ROW_TILE == 0 and rows % ROW_TILE == 0


def _scales_and_zeros(scale: torch.Tensor) -> torch.Tensor:
    s = scale.t().contiguous()  # [K / group, N]
    return torch.stack([s, torch.zeros_like(s)], dim=-1).contiguous()


def convert_(packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Re-lay stored int4 words [N, K/8] out in place as tinygemm's; returns its scales-and-zeros tensor."""
    q = unpack(packed, 4).to(torch.int32) + MIDPOINT  # unsigned fields, column order
    as_bytes = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
    del q
    tiled = torch._convert_weight_to_int4pack(as_bytes, INNER_K_TILES)
    if tiled.numel() * tiled.element_size() != packed.numel() * packed.element_size():
        raise ValueError(f"tinygemm's layout of {list(packed.shape)} words has a different size")
    packed.view(-1).copy_(tiled.reshape(-1).view(torch.int32))
    return _scales_and_zeros(scale)


def _tiled(packed: torch.Tensor, k: int) -> torch.Tensor:
    n = packed.shape[0]
    return packed.view(n // ROW_TILE, k // (16 * INNER_K_TILES), 32, INNER_K_TILES // 2)


def linear(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """``x @ W^T`` (x [..., K] bf16) with tinygemm-laid words."""
    k = packed.shape[1] * scheme.per_word
    flat = x.reshape(-1, k)
    out = torch._weight_int4pack_mm(flat.contiguous(), _tiled(packed, k), scheme.group_size, scales_zeros)
    return out.view(*x.shape[:-1], packed.shape[0])


def stored_words(packed: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """The stored (compressed-tensors) words of tinygemm-laid ``packed``, exactly (see the module note)."""
    n, k = packed.shape[0], packed.shape[1] * scheme.per_word
    ones = _scales_and_zeros(torch.ones(n, k // scheme.group_size, dtype=torch.bfloat16, device=packed.device))
    q = torch.empty(n, k, dtype=torch.int8, device=packed.device)
    for start, eye in _identity_blocks(k, packed.device):
        q[:, start:start + eye.shape[0]] = linear(eye, packed, ones, scheme).t().round().to(torch.int8)
    return pack(q, 4)


def dequantize(packed: torch.Tensor, scales_zeros: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """The bf16 weight [N, K] of tinygemm-laid words: the identity times W^T (one product per output)."""
    n, k = packed.shape[0], packed.shape[1] * scheme.per_word
    out = torch.empty(n, k, dtype=torch.bfloat16, device=packed.device)
    for start, eye in _identity_blocks(k, packed.device):
        out[:, start:start + eye.shape[0]] = linear(eye, packed, scales_zeros, scheme).t()
    return out


def _identity_blocks(k: int, device: torch.device):
    for start in range(0, k, RECOVER_COLUMNS):
        rows = min(RECOVER_COLUMNS, k - start)
        eye = torch.zeros(rows, k, dtype=torch.bfloat16, device=device)
        index = torch.arange(rows, device=device)
        eye[index, start + index] = 1
        yield start, eye
