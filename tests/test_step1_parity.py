"""Step1 against the official implementation's outputs (``reference/step1_logits.npz`` of a parity set).

The fixture folder is loaded through ``load_step1`` exactly as a user folder (fp32, CPU), once per
attention backend this machine can run. Every expected number is read from the set at test time.
Tolerances (parity README): logits / logsumexp atol 1e-4, hidden states atol 2e-5, ids exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.lm.attention import alibi_slopes, make_attention_bias
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import (
    backend_unavailable_reason,
    dtype_kwargs,
    load_step1,
)
from transformers.cache_utils import DynamicCache

LOGIT_ATOL = 1e-4
HIDDEN_ATOL = 2e-5
SEQUENCES = ("seq40", "seq300", "row0", "row1")
CPU = torch.device("cpu")
BACKENDS = tuple(name for name in ("eager", "sdpa", "flex_attention") if backend_unavailable_reason(name, CPU) is None)

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]


@pytest.fixture(scope="module", autouse=True)
def _flex_without_dynamo_tracing():
    """On CPU, un-compiled flex_attention traces its (new) score_mod with dynamo at every call: ~0.1 s per
    layer. The debug switch runs the same reference implementation directly, which keeps the flex tests cheap."""
    import torch.nn.attention.flex_attention as flex_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flex_module, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True)
        yield


@pytest.fixture(scope="module")
def ref(parity) -> dict[str, np.ndarray]:
    data = parity.npz("step1_logits")
    return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def models(parity):
    cache: dict[str, Step1ForCausalLM] = {}

    def get(backend: str) -> Step1ForCausalLM:
        if backend not in cache:
            cache[backend] = load_step1(parity.editx_dir, device="cpu", dtype="fp32", attn_implementation=backend)
        return cache[backend]

    return get


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float, what: str) -> None:
    diff = (actual.detach().float() - torch.from_numpy(np.asarray(expected, dtype=np.float32))).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


def _check_rows(ref: dict[str, np.ndarray], name: str, logits: torch.Tensor, final_hidden: torch.Tensor) -> None:
    """logits [T, V] and final hidden [T, H] of one unpadded sequence against ``{name}_*``."""
    columns = torch.from_numpy(ref["logit_columns"])
    _close(logits[:, columns], ref[f"{name}_logits_cols"], LOGIT_ATOL, f"{name} logits")
    _close(final_hidden, ref[f"{name}_final_hidden"], HIDDEN_ATOL, f"{name} final hidden")
    _close(torch.logsumexp(logits, -1), ref[f"{name}_logsumexp"], LOGIT_ATOL, f"{name} logsumexp")
    _close(logits.max(-1).values, ref[f"{name}_max"], LOGIT_ATOL, f"{name} max")
    assert torch.equal(logits.argmax(-1), torch.from_numpy(ref[f"{name}_argmax"])), f"{name} argmax"
    for key in ref:  # the full-vocabulary rows stored for this sequence
        if key.startswith(f"{name}_logits_full_row"):
            row = int(key.removeprefix(f"{name}_logits_full_row"))
            _close(logits[row], ref[key], LOGIT_ATOL, key)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SEQUENCES)
def test_logits_match_official(models, ref, backend, name):
    model = models(backend)
    ids = torch.from_numpy(ref[f"{name}_input_ids"])[None]
    with torch.no_grad():
        out = model(ids, use_cache=False, output_hidden_states=True)
    _check_rows(ref, name, out.logits[0], out.hidden_states[-1][0])
    if f"{name}_hidden_states" in ref:  # the official tuple: embeddings, layer inputs, normed output
        expected = ref[f"{name}_hidden_states"]
        assert len(out.hidden_states) == expected.shape[0]
        for i, hidden in enumerate(out.hidden_states):
            _close(hidden[0], expected[i], HIDDEN_ATOL, f"{name} hidden_states[{i}]")


@pytest.mark.parametrize("backend", BACKENDS)
def test_left_padded_batch_rows_equal_unpadded_references(models, ref, backend):
    model = models(backend)
    ids = torch.from_numpy(ref["batch_input_ids_leftpad"])
    mask = torch.from_numpy(ref["batch_attention_mask"])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    assert torch.isfinite(out.logits).all(), "pad positions must not produce NaN/inf"
    for row in range(ids.shape[0]):
        real = int(mask[row].sum())
        assert torch.equal(ids[row, -real:], torch.from_numpy(ref[f"row{row}_input_ids"]))
        _check_rows(ref, f"row{row}", out.logits[row, -real:], out.hidden_states[-1][row, -real:])


def _greedy_prompt(ref: dict[str, np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    return torch.from_numpy(ref["seq300_input_ids"])[None], ref["greedy_new_tokens"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_greedy_cached_matches_official(models, ref, backend):
    model = models(backend)
    prompt, expected = _greedy_prompt(ref)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                             max_new_tokens=len(expected), output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, prompt.shape[1]:]
    assert new.tolist() == expected.tolist()
    columns = torch.from_numpy(ref["logit_columns"])
    step_logits = torch.stack([step[0, columns] for step in out.logits])
    _close(step_logits, ref["greedy_step_logits_cols"], LOGIT_ATOL, "generate step logits")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "flex_attention"])  # flex: the kv-buffer loop
def test_manual_cached_loop_matches_official(models, ref, backend):
    """Our own loop: prefill into a DynamicCache, then one token per forward (flex_attention runs its own
    loop in the kv-buffer test below: un-compiled flex on CPU costs ~60 ms per layer call)."""
    model = models(backend)
    prompt, expected = _greedy_prompt(ref)
    columns = torch.from_numpy(ref["logit_columns"])
    cache = DynamicCache()
    tokens, step_logits = [], []
    with torch.no_grad():
        logits = model(prompt, cache=cache, use_cache=True).logits[:, -1]
        for _ in range(len(expected)):
            step_logits.append(logits[0, columns])
            token = logits.argmax(-1, keepdim=True)
            tokens.append(int(token))
            logits = model(token, cache=cache, use_cache=True).logits[:, -1]
    assert tokens == expected.tolist()
    _close(torch.stack(step_logits), ref["greedy_step_logits_cols"], LOGIT_ATOL, "manual loop step logits")


@pytest.mark.parametrize("backend,prebuilt_bias", [(b, True) for b in BACKENDS]
                         + [(b, False) for b in BACKENDS if b != "flex_attention"])  # flex on CPU is slow
def test_preallocated_kv_buffers_match_official(models, ref, backend, prebuilt_bias):
    """The static-cache hook: fixed [B, G, L, D] buffers written in place at given slots; the bias either
    prebuilt outside the model (what a captured decode graph does) or derived from the mask."""
    model = models(backend)
    prompt, expected = _greedy_prompt(ref)
    total = prompt.shape[1] + len(expected)
    buffers = model.model.allocate_kv_buffers(1, total)
    mask = torch.zeros(1, total, dtype=torch.long)
    tokens, inputs, start = [], prompt, 0
    with torch.no_grad():
        for _ in range(len(expected)):
            length = inputs.shape[1]
            mask[:, start:start + length] = 1
            slots = torch.arange(start, start + length)
            if prebuilt_bias:
                bias = model.model.make_attention_bias(mask, length, start, total, CPU, torch.float32)
                out = model(inputs, attention_bias=bias, kv_buffers=buffers, kv_write_index=slots)
            else:
                out = model(inputs, attention_mask=mask, kv_buffers=buffers, kv_write_index=slots)
            inputs = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(inputs))
            start += length
    assert tokens == expected.tolist()


def test_generate_with_static_cache_matches_official(models, ref):
    """transformers' StaticCache (broken by the official remote code) through generate()."""
    model = models("sdpa")
    prompt, expected = _greedy_prompt(ref)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=len(expected), cache_implementation="static")
    assert out[0, prompt.shape[1]:].tolist() == expected.tolist()


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_left_padded_batch_generate_equals_single_rows(models, ref, cache_implementation):
    model = models("sdpa")
    ids = torch.from_numpy(ref["batch_input_ids_leftpad"])
    mask = torch.from_numpy(ref["batch_attention_mask"])
    steps = 8
    with torch.no_grad():
        batch = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=steps,
                               cache_implementation=cache_implementation)[:, -steps:]
        for row in range(ids.shape[0]):
            single = torch.from_numpy(ref[f"row{row}_input_ids"])[None]
            alone = model.generate(single, attention_mask=torch.ones_like(single), do_sample=False,
                                   max_new_tokens=steps)[0, -steps:]
            assert batch[row].tolist() == alone.tolist(), f"row {row}"


# --- attention math beyond the fixture dims (official quirk 4 of the parity README) -------------------

@pytest.mark.parametrize("heads", [1, 2, 8, 12, 48])
def test_slopes_follow_official_recipe_for_any_head_count(heads):
    n = 2 ** int(np.floor(np.log2(heads)))
    expected = [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    expected += [2.0 ** (-4.0 * m / n) for m in range(1, 2 * (heads - n), 2)]
    assert np.allclose(alibi_slopes(heads).numpy(), expected, rtol=1e-6, atol=0)


def _tiny_model(heads: int, groups: int, backend: str, seed: int = 0) -> Step1ForCausalLM:
    config = Step1Config(hidden_size=heads * 4, intermediate_size=32, num_attention_heads=heads,
                         num_attention_groups=groups, num_hidden_layers=2, vocab_size=97)
    torch.manual_seed(seed)
    model = Step1ForCausalLM._from_config(config, attn_implementation=backend, **dtype_kwargs(torch.float32)).eval()
    with torch.no_grad():  # make attention matter: larger q/k, distinct norms
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.6 if "proj" in name else 1.0)
    return model


def _reference_logits(model: Step1ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """Straight-line float64 math of the facts doc: RMSNorm, GQA via h // (H/G), -slope*sqrt(i-j)."""
    cfg = model.config
    heads, groups, dim = cfg.num_attention_heads, cfg.num_attention_groups, cfg.head_dim
    params = {k: v.double() for k, v in model.state_dict().items()}

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    length = ids.shape[0]
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    slopes = alibi_slopes(heads).double()
    bias = -slopes[:, None, None] * torch.sqrt((i - j).clamp(min=0).double())
    bias = bias.masked_fill(j > i, float("-inf"))
    x = params["model.embed_tokens.weight"][ids]
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = norm(x, params[p + "input_layernorm.weight"])
        q = (h @ params[p + "self_attn.q_proj.weight"].T).view(length, heads, dim)
        k = (h @ params[p + "self_attn.k_proj.weight"].T).view(length, groups, dim)
        v = (h @ params[p + "self_attn.v_proj.weight"].T).view(length, groups, dim)
        group_of_head = torch.arange(heads) // (heads // groups)
        scores = torch.einsum("ihd,jhd->hij", q, k[:, group_of_head]) / dim ** 0.5 + bias
        attn = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v[:, group_of_head]).reshape(length, -1)
        x = x + attn @ params[p + "self_attn.o_proj.weight"].T
        h = norm(x, params[p + "post_attention_layernorm.weight"])
        gate = h @ params[p + "mlp.gate_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * (h @ params[p + "mlp.up_proj.weight"].T)) @ params[
            p + "mlp.down_proj.weight"].T
    return norm(x, params["model.norm.weight"]) @ params["lm_head.weight"].T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("heads,groups", [(12, 3), (6, 6), (8, 1)])
def test_backends_match_float64_math_for_other_head_layouts(backend, heads, groups):
    model = _tiny_model(heads, groups, backend)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (23,), generator=gen)
    with torch.no_grad():
        logits = model(ids[None], use_cache=False).logits[0]
    diff = (logits.double() - _reference_logits(model, ids)).abs().max().item()
    assert diff < 1e-4, diff


@pytest.mark.parametrize("backend", BACKENDS)
def test_cached_decode_and_padding_match_full_forward_for_other_head_layouts(backend):
    """12 heads / 3 groups: left padding + cached decode give the unpadded full-forward logits."""
    model = _tiny_model(12, 3, backend, seed=2)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, model.config.vocab_size, (2, 11), generator=gen)
    pad = 4
    padded = torch.cat([torch.zeros(2, pad, dtype=torch.long), ids], 1)
    padded[1, pad:pad + 3] = 0  # row 1 has a longer pad: its real tokens start later
    mask = (torch.arange(padded.shape[1]) >= pad).long().repeat(2, 1)
    mask[1, pad:pad + 3] = 0
    with torch.no_grad():
        full0 = model(ids[:1], use_cache=False).logits[0]
        full1 = model(ids[1:, 3:], use_cache=False).logits[0]
        cache = DynamicCache()
        prefill = model(padded[:, :-3], attention_mask=mask[:, :-3], cache=cache, use_cache=True).logits
        steps = [prefill[:, -1]]
        for t in range(3, 0, -1):
            step_mask = mask[:, : padded.shape[1] - t + 1]
            token = padded[:, -t:][:, :1]
            steps.append(model(token, attention_mask=step_mask, cache=cache, use_cache=True).logits[:, -1])
    decoded = torch.stack(steps[:-1], 1)  # logits at positions -4..-2, then the last one
    assert torch.allclose(decoded[0], full0[-4:-1], atol=1e-4)
    assert torch.allclose(decoded[1], full1[-4:-1], atol=1e-4)
    assert torch.allclose(steps[-1][0], full0[-1], atol=1e-4)
    assert torch.allclose(steps[-1][1], full1[-1], atol=1e-4)
    assert torch.allclose(prefill[0, pad:], full0[:-3], atol=1e-4)
    assert torch.allclose(prefill[1, pad + 3:], full1[:-3], atol=1e-4)


def test_bias_is_rectangular_and_built_from_positions():
    """One decode step over 6 cached slots of a left-padded row: a [B, H, 1, K] bias with -inf on pads."""
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    bias = make_attention_bias("sdpa", 4, mask, query_length=1, past_length=6, kv_length=7, device=CPU,
                               dtype=torch.float32)
    assert bias.dense.shape == (1, 4, 1, 7)
    assert torch.equal(bias.positions.query_positions, torch.tensor([[4]]))
    expected = -alibi_slopes(4)[:, None] * torch.sqrt(torch.tensor([4.0, 3, 2, 1, 0]))
    assert torch.isinf(bias.dense[0, :, 0, :2]).all()
    assert torch.allclose(bias.dense[0, :, 0, 2:], expected)


def test_static_decode_step_traces_as_one_graph_and_backend_switches_live():
    """Design for fast decoding: bias building + a decode step over preallocated buffers compile with
    fullgraph=True (no graph break: no data-dependent branch, no .item()), and give the eager result."""
    model = _tiny_model(12, 3, "sdpa", seed=4)
    length = 12
    buffers = model.model.allocate_kv_buffers(2, length)
    mask = torch.zeros(2, length, dtype=torch.long)
    mask[:, 2:8] = 1
    mask[0, 2] = 0  # row 0 left-padded by one more token
    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(5))

    def step(tokens, step_mask, slots, past):
        bias = model.model.make_attention_bias(step_mask, tokens.shape[1], past, length, CPU, torch.float32)
        return model(tokens, attention_bias=bias, kv_buffers=buffers, kv_write_index=slots).logits

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = step(ids, mask, torch.arange(2, 8), torch.tensor(2))
        assert torch.equal(compiled(ids, mask, torch.arange(2, 8), torch.tensor(2)), expected)
        model.set_attn_implementation("eager")
        eager = step(ids, mask, torch.arange(2, 8), torch.tensor(2))
    assert model.model.layers[0].self_attn.config._attn_implementation == "eager"
    assert (eager - expected).abs().max() < 1e-4
    torch._dynamo.reset()
