"""GPU twin of ``test_attention_fold.py``: on CUDA the prefill's SDPA runs the memory-efficient kernel, and with
a KV group's query heads folded onto the query axis (``sdpa_gqa`` "fold") it must give the expanded path's bits
("expand", the path before) at Step1's head layout and prefill shapes, and whole generations the same cache and
ids (issue 19's same-tokens rule). Skips without CUDA."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import attention
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, get_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig
from layer_cases import SHAPE, rand, small_step1

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
# batch, new queries, cached keys: a batch_edit's 256-token chunks (first and last of 16 x 1,125 tokens), a
# 30 s edit's two 1,024-token chunks, a short single prompt
PREFILL_SHAPES = [(16, 256, 0), (16, 101, 1024), (1, 1024, 0), (1, 933, 1024), (1, 37, 0)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", PREFILL_SHAPES)
def test_folded_sdpa_equals_expanded_kv_bit_for_bit(shape, dtype):
    batch, length, past = shape
    keys = past + length
    heads, groups, dim = SHAPE.num_heads, SHAPE.num_groups, SHAPE.head_dim
    bias = attention.make_attention_bias("sdpa", heads, None, length, past, keys, CUDA, dtype)
    query = rand(batch, length, heads, dim, dtype=dtype, seed=1).transpose(1, 2)
    key = rand(batch, groups, keys, dim, dtype=dtype, seed=2)
    value = rand(batch, groups, keys, dim, dtype=dtype, seed=3)
    folded = attention.sdpa_attention(query, key, value, bias, SHAPE.scaling)
    expanded = attention.sdpa_attention(query, key, value, dataclasses.replace(bias, sdpa_gqa="expand"),
                                        SHAPE.scaling)
    assert torch.equal(folded, expanded)
    exact = attention.eager_attention(query.double(), key.double(), value.double(),
                                      dataclasses.replace(bias, dense=bias.dense.double()), SHAPE.scaling)
    assert (folded.double() - exact).abs().max() < (1e-4 if dtype == torch.float32 else 3e-2)


def test_generation_and_its_cache_equal_the_expanded_path():
    """A bf16 model's batch of 8 (chunked, right-padded prefill) and a single long prompt: the same cache and
    the same ids in both modes, with the same matmul kernels (one decode session)."""
    model = small_step1()
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, C.VQ06_LAST_ID, (n,), generator=gen).tolist()
               for n in (1125, 41, 700, 129, 5, 513, 1024, 257)]
    caps = [64, 40, 48, 64, 17, 64, 33, 64]
    runs = [(prompts, caps, list(range(8))), ([prompts[0] * 2], [80], [11])]
    results = {}
    for mode in ("fold", "expand"):
        model.model.sdpa_gqa = mode
        for i, (p, c, seeds) in enumerate(runs):
            tokens = [o.tokens for o in generate(model, p, c, SamplingConfig(), seeds)]
            cache = [(k[:len(p)].clone(), v[:len(p)].clone()) for k, v in get_decode_session(model).kv]
            results[(mode, i)] = (tokens, cache)
    for i in range(len(runs)):
        (tokens, cache), (before_tokens, before_cache) = results[("fold", i)], results[("expand", i)]
        assert tokens == before_tokens
        for (k1, v1), (k2, v2) in zip(cache, before_cache):
            assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert sum(len(t) for t in results[("fold", 0)][0]) == sum(caps)
