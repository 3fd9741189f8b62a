"""The prefill's SDPA attention folds a KV group's query heads onto the query axis instead of expanding K/V
to every head (issue 19; ``sdpa_gqa`` "fold" against "expand", the path before). Every query row sees the same
keys, bias values and kernel, so the output must be bit for bit the expanded path's: checked here on the CPU
(the GPU twin is ``test_attention_fold_cuda.py``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import attention
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

CPU = torch.device("cpu")
# batch, new queries, cached keys, heads, KV groups, head dim, left padding in row 0
CASES = [(2, 64, 136, 12, 4, 64, True), (1, 300, 600, 48, 4, 64, False), (3, 17, 0, 8, 2, 16, True),
         (1, 40, 0, 4, 4, 32, False)]


def _inputs(case, dtype: torch.dtype, seed: int = 0):
    batch, length, past, heads, groups, dim, padded = case
    keys = past + length
    gen = torch.Generator().manual_seed(seed)
    mask = None
    if padded:
        mask = torch.ones(batch, keys, dtype=torch.long)
        mask[0, :5] = 0
    bias = attention.make_attention_bias("sdpa", heads, mask, length, past, keys, CPU, dtype)
    query = torch.randn(batch, length, heads, dim, generator=gen).to(dtype).transpose(1, 2)  # as the layer's view
    key = torch.randn(batch, groups, keys, dim, generator=gen).to(dtype)
    value = torch.randn(batch, groups, keys, dim, generator=gen).to(dtype)
    return query, key, value, bias, dim ** -0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_folded_sdpa_equals_expanded_kv_bit_for_bit(case, dtype):
    query, key, value, bias, scaling = _inputs(case, dtype)
    assert bias.sdpa_gqa == "fold"  # the default
    folded = attention.sdpa_attention(query, key, value, bias, scaling)
    assert folded.shape == (case[0], case[1], case[3], case[5])
    expanded = attention.sdpa_attention(query, key, value, dataclasses.replace(bias, sdpa_gqa="expand"), scaling)
    assert torch.equal(folded, expanded)
    math = attention.eager_attention(query.double(), key.double(), value.double(),
                                     dataclasses.replace(bias, dense=bias.dense.double()), scaling)
    assert (folded.double() - math).abs().max() < (1e-5 if dtype == torch.float32 else 5e-2)


def test_the_fold_is_a_view_of_the_bias_and_never_expands_kv(monkeypatch):
    query, key, value, bias, scaling = _inputs(CASES[0], torch.float32)
    folded_bias = attention.fold_bias_heads(bias.dense, key.shape[1])
    assert folded_bias.data_ptr() == bias.dense.data_ptr() and folded_bias.stride(-1) == 1
    groups, rep, length = key.shape[1], query.shape[1] // key.shape[1], query.shape[2]
    for head in (0, rep - 1, rep, query.shape[1] - 1):  # head g*rep + r's query i sits at row r * Q + i of group g
        g, r = divmod(head, rep)
        assert torch.equal(folded_bias[:, g, r * length:(r + 1) * length], bias.dense[:, head])
        assert torch.equal(attention.fold_query_heads(query, groups)[:, g, r * length:(r + 1) * length],
                           query[:, head])

    def refuse(*args):
        raise AssertionError("K/V were expanded")

    monkeypatch.setattr(attention, "repeat_kv", refuse)
    attention.sdpa_attention(query, key, value, bias, scaling)
    with pytest.raises(AssertionError, match="expanded"):
        attention.sdpa_attention(query, key, value, dataclasses.replace(bias, sdpa_gqa="expand"), scaling)


def test_an_unknown_gqa_mode_is_refused():
    with pytest.raises(attention.Step1AttentionError, match="fold, expand, enable_gqa"):
        attention.make_attention_bias("sdpa", 8, None, 4, 0, 4, CPU, torch.float32, sdpa_gqa="repeat")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_generation_and_its_cache_equal_the_expanded_path(dtype):
    """The model's own forward (the decode session's prefill) in both modes: the same prompt K/V in the cache,
    the same logits and the same sampled ids, for a batch of prompts of different lengths."""
    torch.manual_seed(0)
    config = Step1Config(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_attention_groups=2,
                         num_hidden_layers=2, vocab_size=C.TEXT_VOCAB_SIZE)
    model = Step1ForCausalLM._from_config(config, attn_implementation="sdpa", **dtype_kwargs(dtype)).eval()
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, C.VQ06_LAST_ID, (n,), generator=gen).tolist() for n in (150, 9, 61)]
    ids = torch.tensor(prompts[0])[None]
    results = {}
    for mode in ("fold", "expand"):
        model.model.sdpa_gqa = mode
        with torch.no_grad():
            out = model(ids, use_cache=True)
        cache = out.past_key_values
        layers = [(cache.layers[i].keys, cache.layers[i].values) for i in range(config.num_hidden_layers)]
        tokens = [o.tokens for o in generate(model, prompts, [12, 12, 12], SamplingConfig(), [1, 2, 3])]
        results[mode] = (out.logits, layers, tokens)
    assert torch.equal(results["fold"][0], results["expand"][0])
    for (k1, v1), (k2, v2) in zip(results["fold"][1], results["expand"][1]):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert results["fold"][2] == results["expand"][2]
    assert all(len(t) == 12 for t in results["fold"][2])
