"""The node functions: on a fake engine that follows the StepAudioEditX contract (``node_doubles``), and on
the tiny model through the real engine."""

from __future__ import annotations

import re
import sys
import types

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import OUTPUT_SAMPLE_RATE
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig
from comfyui_step_audio_editx.engines.step_audio_editx.types import PassResult, Progress, StopReason, Timings
from comfyui_step_audio_editx.nodes import NODE_CLASS_MAPPINGS, comfy_bridge
from comfyui_step_audio_editx.nodes.edit_inputs import EditInputError
from comfyui_step_audio_editx.nodes.engine_cache import EngineCache
from comfyui_step_audio_editx.nodes.engine_node import build_handle
from comfyui_step_audio_editx.nodes.model_folders import AUTO_DOWNLOAD
from node_doubles import EXAMPLES_DIR, SAMPLE_WAV, audio, editor_inputs, speech


def test_engine_node_builds_a_handle_without_loading(fake_engines, tts_root):
    node = NODE_CLASS_MAPPINGS["StepAudioEditXEngine"]()
    (handle,) = node.make("Step-Audio-EditX", "auto", "fp32", "sdpa", False, False, 500, 0.0, 9)
    assert handle.config == EngineConfig(editx_dir=str((tts_root / "Step-Audio-EditX").resolve()),
                                         search_roots=(str(tts_root),), download=False, device="cpu", dtype="fp32",
                                         attention="sdpa", fast_decode=False)
    assert (handle.settings.dynamic_tokens, handle.settings.max_new_tokens, handle.seed) == (False, 500, 9)
    assert handle.settings.sampling.greedy and fake_engines.engines() == []
    assert build_handle(AUTO_DOWNLOAD).config.download is True
    assert handle.config.weights_release == "2026-01"  # a workflow saved before the widget existed: today's weights
    (old,) = node.make("Step-Audio-EditX", "auto", "fp32", "sdpa", False, False, 500, 0.0, 9, "2025-11")
    assert old.config.weights_release == "2025-11" and old.config != handle.config  # a separate engine
    assert handle.config.remote_lm is None  # no lm_server (workflows saved before it existed): the LM runs here
    (remote,) = node.make("Step-Audio-EditX", "auto", "fp32", "sdpa", False, False, 500, 0.0, 9, "2026-01", "none",
                          " gpu-box:8000/v1 ")
    assert remote.config.remote_lm.url == "http://gpu-box:8000" and remote.config != handle.config
    assert fake_engines.engines() == []  # nothing connects before a generating node runs


def test_editor_runs_one_edit_and_reports(fake_engines):
    editor = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]()
    out, info = editor.edit(**editor_inputs(n_edit_iterations=2, dynamic_token=False))
    assert out["waveform"].shape == (1, 1, OUTPUT_SAMPLE_RATE) and out["sample_rate"] == OUTPUT_SAMPLE_RATE
    ((config, engine),) = fake_engines.engines()  # no engine connected: the default one
    assert config.editx_dir.endswith("Step-Audio-EditX") and engine.loads == 1
    kind, (request,), settings = engine.calls[0]
    assert (kind, request.edit_value, request.audio_text, request.seed, request.n_iterations) == (
        "edit", "sad", "Hello there.", 3, 2)
    assert settings.dynamic_tokens is False
    assert "emotion -> sad, 2 iterations, 1 clip" in info and "model calls: 2" in info
    again, _ = editor.edit(**editor_inputs(n_edit_iterations=2, dynamic_token=False))
    assert torch.equal(again["waveform"], out["waveform"]) and engine.loads == 1  # same seed, shared engine


def test_editor_edits_a_padded_batch_in_one_batch_call(fake_engines, tts_root):
    (handle,) = NODE_CLASS_MAPPINGS["StepAudioEditXEngine"]().make(
        "Step-Audio-EditX", "cpu", "auto", "auto", True, True, 8192, 0.7, 40)
    editor = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]()
    batch = audio(speech(1.0), speech(0.5, seed=1))
    out, info = editor.edit(**editor_inputs(audio=batch, transcript="one\ntwo", seed=-1), engine=handle)
    ((_, engine),) = fake_engines.engines()
    kind, requests, _ = engine.calls[0]
    assert kind == "batch_edit" and [r.seed for r in requests] == [40, 41]  # -1: the engine's seed, + row
    assert [r.audio.shape[-1] for r in requests] == [16000, 8000]
    assert out["waveform"].shape == (2, 1, OUTPUT_SAMPLE_RATE)
    assert "clip 2: 0.50 s in -> 0.50 s out" in info and "trimmed 0.50 s of trailing batch padding" in info
    assert info.endswith("seed: 40, the Engine's (this node's seed is -1); clip i uses seed + i - 1")


def test_editor_reports_progress_and_lets_the_interrupt_through(fake_engines, monkeypatch):
    class InterruptProcessingException(Exception):  # named like ComfyUI's
        pass

    checks, texts = [], []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise InterruptProcessingException

    monkeypatch.setattr(comfy_bridge, "_send_progress_text", lambda text, node_id: texts.append((node_id, text)))
    NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]().edit(**editor_inputs(), unique_id="7")
    assert texts[-1][0] == "7" and texts[-1][1].startswith("done: ")  # the finished line replaces the token count
    assert any(re.match(r"\d+/\d+ tokens", t) for _, t in texts[:-1])
    monkeypatch.setattr(comfy_bridge, "check_interrupted", check)
    with pytest.raises(InterruptProcessingException):
        NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]().edit(**editor_inputs(seed=4), unique_id="7")
    assert len(checks) == 3  # checked at every token; nothing after the interrupt
    assert texts[-1][1].startswith("cancelled: ")


def test_editor_rejects_mismatched_batch_text_at_run_time(fake_engines):
    with pytest.raises(EditInputError, match="2 clips but transcript has 1"):
        NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]().edit(
            **editor_inputs(audio=audio(speech(1.0), speech(0.5, seed=1)), transcript="just one"))


def test_clone_node_calls_the_long_form_post_processor(fake_engines, monkeypatch):
    seen = {}

    def clone_long_form(engine, prompt_audio, prompt_sample_rate, prompt_text, text, settings, seed, progress):
        seen.update(engine=engine, shape=tuple(prompt_audio.shape), rate=prompt_sample_rate, prompt_text=prompt_text,
                    text=text, settings=settings, seed=seed)
        progress(Progress("generate", 1, 2))
        wave = torch.zeros(OUTPUT_SAMPLE_RATE)
        return types.SimpleNamespace(waveform=wave, sample_rate=OUTPUT_SAMPLE_RATE, model_calls=3, chunks=2,
                                     truncated=False, timings=Timings(), prompt_text=prompt_text,
                                     prompt_transcribed=False,
                                     passes=[PassResult(wave, 5, 20, 50, StopReason.EOS)] * 3)

    module = types.ModuleType("edit_post_processor")
    module.clone_long_form = clone_long_form
    monkeypatch.setitem(sys.modules, "comfyui_step_audio_editx.utils.audio.edit_post_processor", module)
    clone = NODE_CLASS_MAPPINGS["StepAudioEditXClone"]()
    out, info = clone.clone(audio(speech(2.0, channels=2)), "Reference words.", "Hi <Laughter> there.", 11)
    assert out["waveform"].shape == (1, 1, OUTPUT_SAMPLE_RATE)
    assert (seen["shape"], seen["rate"], seen["prompt_text"], seen["text"], seen["seed"]) == (
        (2, 32000), 16000, "Reference words.", "Hi <Laughter> there.", 11)
    assert seen["settings"].dynamic_tokens is True and seen["engine"].loaded
    assert "chunks: 2, model calls: 3, 60 generated tokens, stop: eos x3" in info
    assert info.endswith("seed: 11, this node's own")
    with pytest.raises(ValueError, match="batch of 2 clips"):
        clone.clone(audio(speech(1.0), speech(1.0)), "a", "b", 0)


# --- node functions on the tiny model -------------------------------------------------------------------------
@pytest.fixture
def engine_handle(tiny_model_root, monkeypatch):
    """The Engine node's handle on the session's tiny model (a fresh engine cache per test)."""
    monkeypatch.setattr(comfy_bridge, "tts_model_roots", lambda: [str(tiny_model_root)])
    monkeypatch.setattr(comfy_bridge, "ENGINE_CACHE", EngineCache())
    (handle,) = NODE_CLASS_MAPPINGS["StepAudioEditXEngine"]().make(
        "Step-Audio-EditX", "cpu", "auto", "auto", True, True, 8192, 0.7, 0)
    return handle


def sample_clip(seconds: float | None = None) -> dict:
    """The example clip as ComfyUI AUDIO [1, C, T] (cut to ``seconds`` when given)."""
    import soundfile

    data, rate = soundfile.read(str(EXAMPLES_DIR / SAMPLE_WAV), dtype="float32", always_2d=True)
    wave = torch.from_numpy(data.T.copy())
    if seconds is not None:
        wave = wave[:, : int(seconds * rate)]
    return {"waveform": wave.unsqueeze(0), "sample_rate": rate}


def test_tiny_model_edit_is_seeded_and_reported(engine_handle):
    editor = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]()
    text = (EXAMPLES_DIR / "sample_speech.txt").read_text().strip()
    inputs = editor_inputs(audio=sample_clip(), transcript=text, emotion="happy", seed=5)
    out, info = editor.edit(**inputs, engine=engine_handle)
    wave = out["waveform"]
    assert wave.dtype == torch.float32 and wave.shape[:2] == (1, 1) and wave.shape[-1] > 0
    assert out["sample_rate"] == OUTPUT_SAMPLE_RATE and torch.isfinite(wave).all()
    assert "model calls: 1" in info and "stop: " in info
    again, _ = editor.edit(**inputs, engine=engine_handle)
    assert torch.equal(again["waveform"], wave)
    ((_, engine),) = comfy_bridge.ENGINE_CACHE.engines()
    assert engine.loaded


@pytest.mark.slow
def test_tiny_model_batch_edit_of_padded_clips(engine_handle):
    editor = NODE_CLASS_MAPPINGS["StepAudioEditXAudioEditor"]()
    full, short = sample_clip(), sample_clip(2.0)
    batch = audio(full["waveform"][0], short["waveform"][0], rate=full["sample_rate"])
    out, info = editor.edit(**editor_inputs(audio=batch, transcript="one\ntwo", seed=7), engine=engine_handle)
    assert out["waveform"].shape[:2] == (2, 1) and torch.isfinite(out["waveform"]).all()
    assert "trimmed" in info and "each batched over 2 clips" in info
    assert not torch.equal(out["waveform"][0], out["waveform"][1])


@pytest.mark.slow
def test_tiny_model_clone_with_inline_tags(engine_handle):
    pytest.importorskip("comfyui_step_audio_editx.utils.audio.edit_post_processor",
                        reason="edit post-processor not written yet")
    clone = NODE_CLASS_MAPPINGS["StepAudioEditXClone"]()
    ref_text = (EXAMPLES_DIR / "sample_speech.txt").read_text().strip()
    out, info = clone.clone(sample_clip(), ref_text, "Hello there. <Laughter> Nice to meet you.", 1,
                            engine=engine_handle)
    assert out["waveform"].shape[:2] == (1, 1) and out["waveform"].shape[-1] > 0 and "model calls" in info
