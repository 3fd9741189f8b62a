"""The persistent layer kernel (``lm.persistent_layer``) in Triton's CPU interpreter, phase by phase (the
interpreter runs programs one after another, so its barriers cannot run there): whole decode steps of a small
float32 Step1, one row on the GEMV tiles and three on the tensor-core ones, against the same step run by the
standalone kernels with the same configurations (bit for bit: the phases are their tile code) and against the
torch reference ops. Several programs share every phase,
so each program's tile loop, the once-per-program RMSNorm scale, the attention items and their merge, and the
residual adds in place are all exercised; two steps in a row check the cache writes. Runs in a child process:
the interpreter is chosen when kernels are decorated."""

from __future__ import annotations

import sys

import pytest

from interpreted import report_checks, run_interpreted_checks

CHECKS = ("even_tiles", "masked_tiles", "three_rows")
TOLERANCE = 1e-5  # float32 against the torch reference ops: only summation orders differ
# (BLOCK_N, BLOCK_K) of qkv, o, gate_up, down: one row with whole GEMV tiles everywhere, or 1,024-wide tiles
# over 512 columns; three rows on the tensor-core tiles (a 16-row block, the last tile of o partly past N)
CONFIGS = {"even_tiles": ((8, 512), (8, 512), (8, 512), (8, 512)),
           "masked_tiles": ((8, 512), (4, 1024), (4, 1024), (8, 512)),
           "three_rows": ((32, 256), (64, 1024), (16, 512), (32, 256))}
PROGRAMS = 3
# per row, cached keys + the new one: two chunks of 128 and a partial one; with three rows also a row that
# no longer runs (0) and a short one
LENGTHS = {1: ((201,), (202,)), 3: ((201, 0, 57), (202, 0, 58))}


def _step(weights, tokens, kv, run_layer):
    """The residual after every layer (before the final norm) for one token."""
    import torch.nn.functional as F

    resid = F.embedding(tokens, weights.embed)
    for i in range(weights.num_layers):
        run_layer(i, resid, kv[i])
    return resid


def _check(name: str) -> bool:
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref_ops
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import persistent_layer, triton_attention
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_linears import LinearChoice, ResidualStream
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import fuse_step1_projections
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM

    torch.manual_seed(0)
    config = Step1Config(hidden_size=512, intermediate_size=512, num_attention_heads=8, num_attention_groups=2,
                         num_hidden_layers=2, vocab_size=C.TEXT_VOCAB_SIZE)
    model = Step1ForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    w = fuse_step1_projections(model)
    hidden, inner = config.hidden_size, config.intermediate_size
    qkv_rows = w.qkv[0].shape[0]
    configs = persistent_layer.LayerConfigs(*CONFIGS[name])
    rows = 3 if name == "three_rows" else 1
    cache = 384
    kv_shape = (rows, w.shape.num_groups, cache, w.shape.head_dim)
    start = [(torch.randn(kv_shape), torch.randn(kv_shape)) for _ in range(w.num_layers)]
    copies = {path: [(k.clone(), v.clone()) for k, v in start] for path in ("persistent", "kernels", "torch")}
    layers = persistent_layer.PersistentLayers(rows, w.shape, hidden, qkv_rows, inner, configs, torch.device("cpu"),
                                              torch.float32)
    workspace = triton_attention.AttentionWorkspace(rows, w.shape, cache, torch.device("cpu"))
    kernel = "gemv" if rows == 1 else "dot"
    choices = {role: LinearChoice(kernel, (*blocks, persistent_layer.PERSISTENT_WARPS, 1), role != "o")
               for role, blocks in zip(("qkv", "o", "gate_up", "down"), CONFIGS[name])}

    def standalone(i, resid, kv, use_triton):
        stream = ResidualStream(resid, w.eps, use_triton=use_triton)
        qkv = stream.normed_linear(w.input_norms[i], w.qkv[i], choices["qkv"] if use_triton else LinearChoice())
        if use_triton:
            attn = triton_attention.decode_attention(qkv, kv[0], kv[1], kv_len, w.slopes, w.shape, workspace)
        else:
            attn = ref_ops.decode_attention(qkv, kv[0], kv[1], kv_len, w.slopes, w.shape)
        stream.residual_linear(attn, w.o[i], choices["o"] if use_triton else LinearChoice(), swiglu=False)
        gu = stream.normed_linear(w.post_norms[i], w.gate_up[i], choices["gate_up"] if use_triton else LinearChoice())
        stream.residual_linear(gu, w.down[i], choices["down"] if use_triton else LinearChoice(), swiglu=True)
        stream._flush()

    runs = {"persistent": lambda i, resid, kv: layers.run(i, resid, w, kv[0], kv[1], kv_len, workspace, phased=True,
                                                          programs=PROGRAMS),
            "kernels": lambda i, resid, kv: standalone(i, resid, kv, True),
            "torch": lambda i, resid, kv: standalone(i, resid, kv, False)}
    ok = True
    for step, lengths in enumerate(LENGTHS[rows]):
        kv_len = torch.tensor(lengths, dtype=torch.int32)
        tokens = torch.arange(rows) + 7 + step
        out = {path: _step(w, tokens, copies[path], run) for path, run in runs.items()}
        ok &= torch.equal(out["persistent"], out["kernels"])
        for (k1, v1), (k2, v2) in zip(copies["persistent"], copies["kernels"]):
            ok &= torch.equal(k1, k2) and torch.equal(v1, v2)
        error = float((out["persistent"] - out["torch"]).abs().max() / out["torch"].abs().max())
        ok &= error < TOLERANCE
        print(f"{name} step {step}: equal to the kernels {ok}, error against torch {error:.2e}", file=sys.stderr)
    ok &= int(workspace.counters.abs().sum()) == 0
    return bool(ok)


def test_persistent_layer_kernel_in_the_interpreter():
    run_interpreted_checks(__file__, CHECKS)


@pytest.mark.parametrize("rows", [1, 2, 16])
def test_configurations_come_from_the_matmul_configs_with_the_attention_kernels_warps(rows):
    """The persistent step runs every matmul phase with the attention kernel's warps, so its candidates are
    exactly the configurations with that many warps (one-row GEMVs, or tensor-core tiles for 2-16 rows whose
    k-step fits the register cap), fused where the role has a prologue."""
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_linears, persistent_layer

    kernel, configs = ("gemv", decode_linears.GEMV_CONFIGS) if rows == 1 else ("dot", decode_linears.DOT_CONFIGS)
    wanted = {c for c in configs if c[2] == persistent_layer.PERSISTENT_WARPS
              and (rows == 1 or c[1] <= persistent_layer.PERSISTENT_MAX_DOT_BLOCK_K)}
    assert wanted and (rows == 1 or all(c[1] <= 256 for c in wanted))  # k-steps of 512 spill under the cap
    for role in decode_linears.ROLES:
        found = decode_linears.candidates(role, rows, "persistent")
        assert found and all(c.kernel == kernel for c in found)
        assert {c.config for c in found} == wanted
        assert all(c.fused == (decode_linears.PROLOGUE[role] is not None) for c in found)


def test_more_rows_than_a_tensor_core_tile_are_refused():
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import persistent_layer
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_ops import AttentionShape

    configs = persistent_layer.LayerConfigs(*((16, 512),) * 4)
    with pytest.raises(ValueError, match="1-16 rows, not 17"):
        persistent_layer.PersistentLayers(17, AttentionShape(8, 2, 64), 512, 768, 512, configs, torch.device("cpu"),
                                          torch.float32)


if __name__ == "__main__":
    report_checks(_check, sys.argv[1:])
