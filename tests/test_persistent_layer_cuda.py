"""The persistent layer kernel on the GPU (issue 19): one cooperative launch per layer with grid barriers gives
the bits of the same phases launched one by one and of the standalone kernels with the same matmul
configurations (Step1's full width at 1, 8 and 16 rows, every kv length class, a row that no longer runs,
repeated launches and graph replays on one ticket counter), whole generations of a small model give the same
ids as the plain step with the same kernels, and a GPU or install where the launch fails falls back to the
plain step. Skips without CUDA and triton."""

from __future__ import annotations

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import (
    persistent_layer,
    triton_attention,
    triton_decode,
    triton_pdl,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import LinearChoice, ResidualStream
from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions
from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import generate, get_decode_session
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import dtype_kwargs
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig
from layer_cases import rel, small_step1

pytestmark = pytest.mark.skipif(not triton_decode.available(), reason="needs CUDA and triton")
CUDA = torch.device("cuda")
ROLES = ("qkv", "o", "gate_up", "down")
# rows: (BLOCK_N, BLOCK_K) of qkv, o, gate_up, down: one row on the GEMV tiles, more on the tensor-core ones
CONFIG_SETS = {(1, "8x512"): ((8, 512),) * 4, (1, "mixed"): ((8, 512), (4, 1024), (4, 1024), (8, 512)),
               (8, "32x256"): ((32, 256),) * 4, (16, "mixed"): ((64, 128), (32, 256), (64, 128), (32, 256))}
LENGTHS = (1, 2, 129, 1300, 2049)  # the new token alone, one chunk, several, a partial last chunk


def _full_width(dtype: torch.dtype) -> Step1ForCausalLM:
    torch.manual_seed(0)
    config = Step1Config(num_hidden_layers=2, vocab_size=C.TEXT_VOCAB_SIZE)  # Step1's widths, two layers
    with torch.device("cuda"):
        model = Step1ForCausalLM._from_config(config, attn_implementation="sdpa", **dtype_kwargs(dtype))
    return model.eval().requires_grad_(False)


def _standalone_layer(w, i, resid, keys, values, kv_len, workspace, choices, pdl=False):
    stream = ResidualStream(resid, w.eps, use_triton=True, pdl=pdl)
    qkv = stream.normed_linear(w.input_norms[i], w.qkv[i], choices["qkv"])
    attn = triton_attention.decode_attention(qkv, keys, values, kv_len, w.slopes, w.shape, workspace)
    stream.residual_linear(attn, w.o[i], choices["o"], swiglu=False)
    gu = stream.normed_linear(w.post_norms[i], w.gate_up[i], choices["gate_up"])
    stream.residual_linear(gu, w.down[i], choices["down"], swiglu=True)


@pytest.mark.parametrize("configs", list(CONFIG_SETS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_launch_per_layer_equals_the_phases_and_the_standalone_kernels(dtype, configs):
    """Against the standalone kernels launched plainly and, at 2-16 rows, as the plain step launches them there
    (programmatic dependent launch: the same arithmetic)."""
    rows = configs[0]
    model = _full_width(dtype)
    w = fuse_step1_projections(model)
    cache = 2560
    kernel = "gemv" if rows == 1 else "dot"
    choices = {r: LinearChoice(kernel, (*c, persistent_layer.PERSISTENT_WARPS, 1), r != "o")
               for r, c in zip(ROLES, CONFIG_SETS[configs])}
    layers = persistent_layer.build(w, rows, choices, CUDA, dtype)
    workspace = triton_attention.AttentionWorkspace(rows, w.shape, cache, CUDA)
    gen = torch.Generator(device="cuda").manual_seed(1)
    kv = torch.randn(2, rows, w.shape.num_groups, cache, w.shape.head_dim, device="cuda", generator=gen).to(dtype)
    paths = ["persistent", "persistent", "phased", "standalone"]  # twice: the ticket counter moves on
    if rows > 1 and triton_pdl.supported(CUDA):
        paths.append("standalone, PDL")
    for length in LENGTHS:
        kv_len = torch.tensor([max(1, length - 37 * r) for r in range(rows)], dtype=torch.int32, device="cuda")
        if rows > 2:
            kv_len[1] = 0  # a row that no longer runs
        start = torch.randn(rows, w.embed.shape[1], device="cuda", generator=gen).to(dtype)
        outs = []
        for path in paths:
            resid, keys, values = start.clone(), kv[0].clone(), kv[1].clone()
            if path.startswith("standalone"):
                _standalone_layer(w, 1, resid, keys, values, kv_len, workspace, choices, pdl=path.endswith("PDL"))
            else:
                layers.run(1, resid, w, keys, values, kv_len, workspace, phased=path == "phased", programs=264)
            torch.cuda.synchronize()
            outs.append((resid, keys, values))
        for other in outs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(outs[0], other)), length
        assert int(workspace.counters.abs().sum()) == 0
        assert int(layers.barrier.item()) % layers.programs == 0
    assert layers.programs >= torch.cuda.get_device_properties(0).multi_processor_count


def test_graph_replays_equal_eager_launches():
    model = _full_width(torch.bfloat16)
    w = fuse_step1_projections(model)
    layers = persistent_layer.build(w, 1, {r: LinearChoice("gemv", (8, 512, 4, 1), True) for r in ROLES}, CUDA,
                                    torch.bfloat16)
    workspace = triton_attention.AttentionWorkspace(1, w.shape, 1536, CUDA)
    kv = [(torch.randn(1, 4, 1536, 64, device="cuda").bfloat16(), torch.randn(1, 4, 1536, 64, device="cuda").bfloat16())
          for _ in range(w.num_layers)]
    kv_len = torch.tensor([900], dtype=torch.int32, device="cuda")
    tokens = torch.tensor([5], device="cuda")

    def step(cache):
        return persistent_layer.run_layers(layers, w, tokens, cache, kv_len, workspace)

    eager = step([(k.clone(), v.clone()) for k, v in kv])
    cache = [(k.clone(), v.clone()) for k, v in kv]
    step(cache)  # compiled and the grid size known before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(cache)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager)
    reference = _plain_final_hidden(w, tokens, [(k.clone(), v.clone()) for k, v in kv], kv_len)
    assert rel(out, reference) < 2e-2


def _plain_final_hidden(w, tokens, kv, kv_len):
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops

    stream = ResidualStream(torch.nn.functional.embedding(tokens, w.embed), w.eps, use_triton=False)
    for i in range(w.num_layers):
        qkv = stream.normed_linear(w.input_norms[i], w.qkv[i], LinearChoice())
        attn = ref_ops.decode_attention(qkv, kv[i][0], kv[i][1], kv_len, w.slopes, w.shape)
        stream.residual_linear(attn, w.o[i], LinearChoice(), swiglu=False)
        gu = stream.normed_linear(w.post_norms[i], w.gate_up[i], LinearChoice())
        stream.residual_linear(gu, w.down[i], LinearChoice(), swiglu=True)
    return stream.norm(w.final_norm)


def _runs():
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, C.VQ06_LAST_ID, (n,), generator=gen).tolist() for n in (700, 41, 1300, 129)]
    return prompts, [120, 40, 80, 96]


def test_generation_gives_the_plain_steps_tokens_with_the_same_kernels():
    """Single rows and a batch of 4 (whose finished rows hand over to the buckets of 2 and 1) through the
    persistent kernel, and through the plain step pinned to the same matmul configurations: the same ids for
    every seed and both official samplings."""
    model = small_step1()
    prompts, caps = _runs()
    runs = [([p], [c], [i]) for i, (p, c) in enumerate(zip(prompts, caps))] + [(prompts, caps, [0, 1, 2, 3])]
    configs = (SamplingConfig(), SamplingConfig.original_path())
    session = get_decode_session(model, DecodeOptions(persistent=True))
    tokens = {(config, i): [o.tokens for o in generate(model, p, c, config, seeds)] for config in configs
              for i, (p, c, seeds) in enumerate(runs)}
    assert session.persistent and "+persistent" in session.mode and set(session._persistent) >= {1, 2, 4}
    pinned = dict(session._linear_choice)
    plain = get_decode_session(model, DecodeOptions())
    plain._linear_choice.update(pinned)  # the same kernels, five launches per layer
    for config in configs:
        for i, (p, c, seeds) in enumerate(runs):
            assert [o.tokens for o in generate(model, p, c, config, seeds)] == tokens[(config, i)], (config, i)
    assert not plain.persistent
    assert [len(t) for t in tokens[(configs[0], len(runs) - 1)]] == caps


def test_a_failing_launch_falls_back_to_the_plain_step(monkeypatch, caplog):
    model = small_step1()
    prompts, caps = _runs()
    want = generate(model, prompts[:1], caps[:1], SamplingConfig(), [3])[0].tokens  # the default session

    def refuse(*args, **kwargs):
        raise RuntimeError("cooperative launch too large")

    monkeypatch.setattr(persistent_layer, "resident_programs", refuse)
    session = get_decode_session(model, DecodeOptions(persistent=True))
    got = generate(model, prompts[:1], caps[:1], SamplingConfig(), [3])[0].tokens
    assert not session.persistent and "launching each layer's kernels one by one" in caplog.text
    assert len(got) == len(want) == caps[0]
