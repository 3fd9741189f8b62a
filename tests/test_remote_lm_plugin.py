"""The vLLM plugin's rules equal the local sampler's (no vLLM needed: the rules are plain torch).

The plugin module must import without vLLM (the pack never depends on it); its processor class is built
only when a server asks for it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm import sampling
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote import step_audio_vllm_plugin as plugin

V = C.TEXT_VOCAB_SIZE


def local_masked(logits: torch.Tensor, n_gen: list[int], history: list[list[int]], constrain: bool, guard: bool):
    config = sampling.SamplingConfig(constrain_audio=constrain, repetition_guard=guard)
    return sampling.masked_logits(logits, config, torch.tensor(n_gen), torch.tensor(history),
                                  sampling.audio_slot_masks(V, "cpu"))


@pytest.mark.parametrize("constrain, guard", [(True, False), (False, True), (True, True)])
def test_plugin_masks_equal_the_local_sampler(constrain, guard):
    gen = torch.Generator().manual_seed(0)
    prompt = [1, 4, 500, 600, 700, 800, 900]
    rows = {}
    n_gen, history = [], []
    for r, step in enumerate([0, 1, 2, 4, 5, 6, 13]):
        # outputs in phase, with a repeat of the last id in the window on odd rows (the guard fires there)
        out = [C.VQ02_FIRST_ID + n if n % 5 < 2 else C.VQ06_FIRST_ID + n for n in range(step)]
        if r % 2 and step >= 2:
            out[-2] = out[-1]
        rows[r] = plugin.RequestRules(constrain, guard, False, prompt[-C.REPETITION_WINDOW:], out)
        n_gen.append(step)
        window = (prompt + out)[-C.REPETITION_WINDOW:]
        history.append([-1] * (C.REPETITION_WINDOW - len(window)) + window)
    logits = torch.randn(len(rows), V, generator=gen)
    expected = local_masked(logits, n_gen, history, constrain, guard)
    got = plugin.apply_rules(logits.clone(), rows, plugin.slot_allowed(V), 0)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.isinf(got).any(dim=1).sum() >= (len(rows) if constrain else 2)  # rows 3 and 5 repeat


def test_rules_leave_other_requests_alone_and_the_probe_forces_its_answer():
    logits = torch.randn(3, V)
    before = logits.clone()
    probe = plugin.RequestRules(False, False, True, [], [])
    flags = plugin.FLAG_STEP1 | plugin.FLAG_STEP1_VOCAB
    got = plugin.apply_rules(logits, {1: probe}, plugin.slot_allowed(V), flags)
    assert torch.equal(got[0], before[0]) and torch.equal(got[2], before[2])
    assert int(got[1].argmax()) == plugin.PROBE_MARK_ID and torch.isinf(got[1]).sum() == V - 1
    assert plugin.rules_from_extra_args({"other": 1}, [1], []) is None
    facts = plugin.read_probe_answer(plugin.probe_answer(flags))
    assert facts == plugin.ModelFacts(plugin.PLUGIN_VERSION, step1=True, tied_head=False, step1_vocab=True)
    assert plugin.read_probe_answer([5, 6, 7]) is None


def test_model_flags_read_the_served_config():
    class Cfg:
        architectures = ["Step1ForCausalLM"]
        vocab_size = V

    assert plugin.model_flags(Cfg()) == plugin.FLAG_STEP1 | plugin.FLAG_STEP1_VOCAB | plugin.FLAG_TIED_HEAD
    Cfg.tie_word_embeddings = False  # what the recipe's --hf-overrides sets
    assert plugin.model_flags(Cfg()) == plugin.FLAG_STEP1 | plugin.FLAG_STEP1_VOCAB


def test_the_plugin_imports_without_vllm_and_stands_alone(tmp_path):
    """As the server loads it: its folder alone on the path, not as part of the pack."""
    code = ("import sys, step_audio_vllm_plugin as p; assert 'vllm' not in sys.modules; "
            "print(p.PLUGIN_FQCN, p.probe_answer(0))")
    folder = str(plugin.__file__).rsplit("/", 1)[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": folder}, text=True,
                         capture_output=True, check=True).stdout
    assert out.split()[0] == "step_audio_vllm_plugin:StepAudioSlotProcessor"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError):
            plugin.StepAudioSlotProcessor  # noqa: B018 - the lazy class needs vLLM
