"""The decode kernels' group-interleaved layout (``quant.interleaved``): a bijection of the fields inside
each group, and a ``QuantLinear`` holding it still saves and computes exactly what the stored words do.
The Triton kernels themselves are checked on the GPU (``tests/test_quant_cuda.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import QuantLinear, QuantScheme, dequantize, unpack
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.interleaved import deinterleave, interleave
from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.linear import interleave_for_kernels
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures" / "compressed_tensors"


def _words(rows: int, cols: int, bits: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-2 ** 31, 2 ** 31 - 1, (rows, cols * bits // 32), generator=gen, dtype=torch.int64).to(
        torch.int32)


@pytest.mark.parametrize("bits,group", [(4, 128), (8, 128), (4, 16), (8, 32)])
def test_interleave_is_a_bijection_of_fields_within_each_group(bits, group):
    scheme = QuantScheme(bits, group)
    words = _words(5, 512, bits, seed=bits + group)
    mixed = interleave(words, scheme)
    assert not torch.equal(mixed, words)
    assert torch.equal(deinterleave(mixed, scheme), words)
    # field j of word w (in its group) holds column j * GW + w: check the rule itself on the values
    values, moved = unpack(words, bits), unpack(mixed, bits)
    per, gw = 32 // bits, group // (32 // bits)
    for col in (0, 1, gw, gw + 3, group - 1, group + 2 * gw + 1, 511):
        g, j, w = col // group, (col % group) // gw, col % gw
        position = g * group + w * per + j  # word g*GW + w, field j
        assert torch.equal(moved[:, position], values[:, col])
    # in place (the decode session's way) gives the same words
    inplace = words.clone()
    interleave(inplace, scheme, out=inplace)
    assert torch.equal(inplace, mixed)


@pytest.mark.parametrize("stem,bits", [("w4a16", 4), ("w8a16", 8)])
def test_interleaved_quant_linear_saves_and_computes_the_stored_weights(stem, bits):
    """The compressed-tensors fixture's layers: interleaved in place, the module still dequantizes to what the
    library decodes, its state_dict holds the file's words bit for bit, and its CPU forward is unchanged."""
    tensors = load_file(str(FIXTURES / f"{stem}.safetensors"))
    meta = json.loads((FIXTURES / f"{stem}.json").read_text())
    name = sorted(meta["decompressed"])[0]
    packed, scale = tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_scale"]
    scheme = QuantScheme(bits, 128)
    module = QuantLinear(packed.shape[1] * 32 // bits, packed.shape[0], scheme, scale.dtype)
    module.set_tensors(packed.clone(), scale)
    x = torch.randn(3, module.in_features, dtype=scale.dtype)
    before = module(x)
    reference = dequantize(packed, scale, scheme)
    interleave(module.weight_packed, scheme, out=module.weight_packed)
    module.interleaved = True
    assert not torch.equal(module.weight_packed, packed)
    assert torch.equal(module.state_dict()["weight_packed"], packed)
    assert torch.equal(module.dequantized(), reference)
    assert torch.equal(module(x), before)
    assert "interleaved" in repr(module)


def test_interleave_for_kernels_leaves_cpu_matrices_in_the_stored_layout():
    module = QuantLinear.from_linear(torch.nn.Linear(256, 64, bias=False), QuantScheme(4, 128))
    words = module.weight_packed.clone()
    matrix = interleave_for_kernels([module], module.matrix)
    assert not matrix.interleaved and not module.interleaved
    assert torch.equal(module.weight_packed, words)


def test_only_rows_the_dot_kernel_can_block_are_interleaved():
    """The dot kernel's blocks hold 16 words: the real model's rows (384 / 1,024 words) split into them and a
    row of at most one block is masked, but the parity model's 24-word down rows would fail at run time, so
    those keep the stored layout."""
    assert interleaved.fits(torch.zeros(4, 384, dtype=torch.int32))
    assert interleaved.fits(torch.zeros(4, 1024, dtype=torch.int32))
    assert interleaved.fits(torch.zeros(4, 6, dtype=torch.int32))
    assert not interleaved.fits(torch.zeros(4, 24, dtype=torch.int32))
