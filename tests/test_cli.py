"""The command line on a tiny random model: edit, clone, batch, errors; and downloads that cannot happen."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest
import soundfile as sf

from comfyui_step_audio_editx.cli import main
from comfyui_step_audio_editx.engines.step_audio_editx import (
    OUTPUT_SAMPLE_RATE,
    ModelFilesError,
    resolve_model_folders,
)

SAMPLES_PER_GROUP = 2880


@pytest.fixture(scope="module")
def models(tiny_model_root):
    return tiny_model_root


@pytest.fixture(scope="module")
def short_clip(short_sample_clip):
    return short_sample_clip("short", "I just heard the news, and honestly")


def common(models) -> list[str]:
    return ["--models-dir", str(models), "--device", "cpu", "--no-dynamic-tokens", "--max-new-tokens", "40"]


def read_output(path: Path):
    data, sr = sf.read(path, dtype="float32")
    assert sr == OUTPUT_SAMPLE_RATE and data.ndim == 1 and len(data) % SAMPLES_PER_GROUP == 0
    assert len(data) <= SAMPLES_PER_GROUP * math.ceil(40 / 5)
    return data


def test_edit_writes_24khz_audio(models, short_clip, tmp_path):
    out = tmp_path / "happy.wav"
    assert main(["edit", str(short_clip), "--edit-type", "emotion", "--value", "happy", "-o", str(out),
                 "--iterations", "2", *common(models)]) == 0
    read_output(out)


def test_clone_with_inline_tags(models, short_clip, tmp_path):
    out = tmp_path / "clone.wav"
    assert main(["clone", "--prompt-audio", str(short_clip), "--text", "Hello there. <Laughter> [pause:300ms] Bye.",
                 "-o", str(out), *common(models)]) == 0
    data, sr = sf.read(out, dtype="float32")
    assert sr == OUTPUT_SAMPLE_RATE and len(data) >= int(0.3 * sr)  # at least the pause


def test_batch_manifest(models, short_clip, tmp_path):
    manifest = tmp_path / "jobs.jsonl"
    rows = [{"input": str(short_clip), "edit_type": "style", "value": "whisper", "output": "a.wav"},
            {"input": str(short_clip), "edit_type": "denoise", "text": "", "seed": 3, "output": "b.wav"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    assert main(["batch", str(manifest), "--out-dir", str(out_dir), *common(models)]) == 0
    read_output(out_dir / "a.wav")
    read_output(out_dir / "b.wav")


def test_bad_input_is_a_message_not_a_traceback(models, short_clip, tmp_path, caplog):
    out = tmp_path / "x.wav"
    assert main(["edit", str(short_clip), "--edit-type", "emotion", "--value", "hapy", "-o", str(out),
                 *common(models)]) == 2
    assert "happy" in caplog.text and not out.exists()
    lonely = tmp_path / "lonely.wav"  # no transcript beside it
    lonely.write_bytes(short_clip.read_bytes())
    caplog.clear()  # no transcript anywhere: it is recognised and logged so the user can correct it
    with caplog.at_level(logging.INFO, logger="comfyui_step_audio_editx"):
        assert main(["edit", str(lonely), "--edit-type", "emotion", "--value", "sad", "-o", str(out),
                     *common(models)]) == 0
    assert "recognised transcript (pass a corrected one with --text)" in caplog.text
    assert main(["edit", str(lonely), "--edit-type", "emotion", "--text-file", str(tmp_path / "none.txt"),
                 *common(models)]) == 2  # a named transcript file must exist
    assert main(["edit", str(lonely), "--edit-type", "denoise", "-o", str(out), *common(models)]) == 0  # needs none
    read_output(out)


def test_offline_download_lists_every_missing_file(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE set after huggingface_hub was imported still stops the download before any request."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("hf_hub_download was called in offline mode")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelFilesError) as info:
        resolve_model_folders([tmp_path], download=True)
    message = str(info.value)
    assert "offline mode" in message and time.perf_counter() - started < 2
    assert "config.json" in message and "linguistic_tokenizer.npy" in message
    assert "stepfun-ai/Step-Audio-EditX" in message and "stepfun-ai/Step-Audio-Tokenizer" in message


def test_weights_release_flag_reaches_the_engine(monkeypatch):
    from comfyui_step_audio_editx import cli

    args = cli.build_parser().parse_args(["edit", "x.wav", "--edit-type", "vad", "--weights-release", "2025-11"])
    assert args.weights_release == "2025-11"
    assert cli.build_parser().parse_args(["edit", "x.wav", "--edit-type", "vad"]).weights_release == "2026-01"
    seen = {}
    monkeypatch.setattr("comfyui_step_audio_editx.engines.step_audio_editx.StepAudioEditX.load",
                        lambda self: seen.setdefault("config", self.config) and self)
    cli._engine(args)
    assert seen["config"].weights_release == "2025-11"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["edit", "x.wav", "--edit-type", "vad", "--weights-release", "2024"])


def test_sampling_flags_default_to_the_current_official_path():
    from comfyui_step_audio_editx import cli
    from comfyui_step_audio_editx.engines.step_audio_editx import SamplingConfig

    parse = cli.build_parser().parse_args
    assert cli._settings(parse(["edit", "x.wav", "--edit-type", "vad"])).sampling == SamplingConfig()
    original = parse(["edit", "x.wav", "--edit-type", "vad", "--top-k", "50", "--repetition-guard"])
    assert cli._settings(original).sampling == SamplingConfig.original_path()
    legacy = parse(["edit", "x.wav", "--edit-type", "vad", "--no-repetition-guard"])  # old scripts still parse
    assert cli._settings(legacy).sampling.repetition_guard is False


def test_unresolvable_hub_fails_at_once(tmp_path, monkeypatch):
    """No DNS: one clear error in well under a second instead of ~23 s of retries."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("network was tried"))
    monkeypatch.setattr(constants, "ENDPOINT", "https://no-such-host.invalid")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelFilesError, match="cannot resolve no-such-host.invalid"):
        resolve_model_folders([tmp_path], download=True)
