"""The fused Triton sampler (``lm/triton_sampler``) run by Triton's CPU interpreter against the torch
reference (``decode_state.choose_and_commit``): the same ids and bookkeeping, so CI checks the kernel's
logic without a GPU. The interpreter is chosen when kernels are decorated, so it runs in a child process
(this file, run as a script). It covers the one-launch kernel that serves the audio-constrained head (every
setting here); the interpreter of Triton 3.5 cannot run the multi-tile kernels of the unconstrained
vocabulary (loops over a run-time width). The GPU test of all compiled kernels is in test_generation_cuda.py."""

from __future__ import annotations

import sys

CONFIGS = ("default", "greedy", "top3_guard", "original")
STATE_FIELDS = ("tokens", "pos", "n_gen", "active", "history", "out", "kv_len")


def _compare(name: str) -> list[str]:
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import triton_sampler
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_state import (
        DecodeState,
        SamplerTables,
        choose_and_commit,
    )
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.fused_weights import audio_vocab_ids
    from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig

    config = {"default": SamplingConfig(), "greedy": SamplingConfig(do_sample=False),
              "top3_guard": SamplingConfig(top_k=3, temperature=1.3, repetition_guard=True),
              "original": SamplingConfig.original_path()}[name]
    cpu, rows = torch.device("cpu"), 4
    ids = audio_vocab_ids(C.TEXT_VOCAB_SIZE, cpu) if config.constrain_audio else None
    head = torch.randn(C.TEXT_VOCAB_SIZE, 8, generator=torch.Generator().manual_seed(12))
    tables = SamplerTables.build(head, ids, config.constrain_audio)
    prompts = [[1, 2, 3] + [65536 + (i * 7) % 5] * (i % 12) for i in range(3)]
    states = []
    for _ in range(2):
        state = DecodeState.allocate(rows, rows, 40, 8, cpu, torch.float32)
        state.load_requests(prompts, [30] * 3, [100, 101, 102], rows)
        states.append(state)
    for step in range(6):
        logits = torch.randn(rows, tables.head.shape[0], generator=torch.Generator().manual_seed(100 + step)) * 2
        triton_sampler.sample_and_commit(logits, config, states[0], tables)
        choose_and_commit(logits, config, states[1], tables)
    if not states[0].n_gen.sum():
        return ["nothing was generated"]
    return [field for field in STATE_FIELDS if not torch.equal(getattr(states[0], field), getattr(states[1], field))]


def test_interpreted_sampler_kernel_equals_the_torch_reference():
    from interpreted import run_interpreted_checks  # a test helper: not importable in the child process

    run_interpreted_checks(__file__, CONFIGS)


if __name__ == "__main__":
    for config_name in sys.argv[1:]:
        differing = _compare(config_name)
        print(f"{config_name}:{'ok' if not differing else 'differs:' + ','.join(differing)}")
