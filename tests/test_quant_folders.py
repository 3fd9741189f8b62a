"""StepFun's AWQ-4bit folder as a model choice: which files it needs, where the decoder and tokenizer.model
come from (its own, else the bf16 folder beside it), which hub repo each missing file is fetched from, and
the Engine node / CLI plumbing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx import model_files
from comfyui_step_audio_editx.engines.step_audio_editx.model_files import (
    AWQ_DIRNAME,
    AWQ_REPO,
    DECODER_FILES,
    EDITX_REPO,
    ModelFilesError,
    download_missing,
    find_model_folders,
    resolve_model_folders,
)
from comfyui_step_audio_editx.nodes.model_folders import AUTO_DOWNLOAD_AWQ, model_choices, resolve_model_choice


def _awq_folder(root: Path, with_decoder: bool) -> Path:
    awq = root / AWQ_DIRNAME
    awq.mkdir()
    (awq / "config.json").write_text(json.dumps({"model_type": "step1", "quantization_config": {}}))
    (awq / "model.safetensors").write_bytes(b"")
    if with_decoder:
        for rel in DECODER_FILES:
            (awq / rel).parent.mkdir(parents=True, exist_ok=True)
            (awq / rel).write_bytes(b"")
        (awq / "tokenizer.model").write_bytes(b"")
    return awq


def test_awq_folder_reads_decoder_and_tokenizer_from_the_bf16_folder_beside_it(tiny_model_root, tmp_path):
    root = tmp_path / "TTS"
    shutil.copytree(tiny_model_root, root)
    awq = _awq_folder(root, with_decoder=False)
    folders = resolve_model_folders((str(root),), editx_dir=str(awq))
    assert folders.quantized and folders.editx == awq.resolve()
    assert folders.cosyvoice == (root / "Step-Audio-EditX" / "CosyVoice-300M-25Hz").resolve()
    assert folders.text_tokenizer == (root / "Step-Audio-EditX").resolve()
    plain = find_model_folders((str(root),))
    assert not plain.quantized and plain.cosyvoice == plain.editx / "CosyVoice-300M-25Hz"


def test_awq_folder_with_its_own_decoder_uses_it(tmp_path):
    awq = _awq_folder(tmp_path, with_decoder=True)
    folders = find_model_folders((), editx_dir=str(awq), tokenizer_dir=str(tmp_path / "tok"))
    assert folders.cosyvoice == awq.resolve() / "CosyVoice-300M-25Hz" and folders.text_tokenizer == awq.resolve()
    missing = folders.missing()
    assert {m.repo for m in missing} == {"stepfun-ai/Step-Audio-Tokenizer"}  # only the tokenizer folder lacks files


def test_missing_awq_files_name_the_right_repo_and_folder(tmp_path):
    awq = tmp_path / AWQ_DIRNAME
    folders = find_model_folders((), editx_dir=str(awq), tokenizer_dir=str(tmp_path / "tok"))
    missing = {(m.repo, m.folder.name, m.relpath) for m in folders.missing()}
    assert (AWQ_REPO, AWQ_DIRNAME, "config.json") in missing
    assert (AWQ_REPO, AWQ_DIRNAME, "model.safetensors.index.json") in missing
    # the decoder comes from the bf16 repo into a Step-Audio-EditX folder beside (not its 7 GB language model)
    assert (EDITX_REPO, "Step-Audio-EditX", DECODER_FILES[1]) in missing
    assert not any(rel.startswith("model") for repo, _, rel in missing if repo == EDITX_REPO)
    with pytest.raises(ModelFilesError, match=AWQ_REPO):
        folders.verify()


def test_download_falls_back_to_a_single_weights_file(tmp_path, monkeypatch):
    """A repo without model.safetensors.index.json gets model.safetensors instead (hub stand-in records calls)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    calls = []

    def fake_download(repo, relpath, local_dir, token=None):
        calls.append((repo, relpath))
        if relpath == "model.safetensors.index.json":
            raise EntryNotFoundError("no index")
        target = Path(local_dir) / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"model_type": "step1"}) if relpath == "config.json" else "")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(model_files, "_hub_unreachable_reason", lambda: None)  # a reachable hub, simulated
    awq = tmp_path / AWQ_DIRNAME
    folders = find_model_folders((), editx_dir=str(awq), tokenizer_dir=str(tmp_path / "Step-Audio-Tokenizer"))
    download_missing(folders)
    assert (AWQ_REPO, "model.safetensors") in calls and (awq / "model.safetensors").is_file()
    assert all(repo != EDITX_REPO or rel in DECODER_FILES or rel == "tokenizer.model" for repo, rel in calls)


def test_engine_node_offers_the_awq_download_and_resolves_it(tmp_path):
    root = tmp_path / "TTS"
    root.mkdir()
    assert model_choices([root])[-1] == AUTO_DOWNLOAD_AWQ
    path, download = resolve_model_choice(AUTO_DOWNLOAD_AWQ, [root])
    assert download and Path(path) == (root / AWQ_DIRNAME).resolve()


def test_cli_awq_and_quantize_flags_reach_the_engine_config(monkeypatch, tmp_path):
    from comfyui_step_audio_editx import cli
    from comfyui_step_audio_editx.engines.step_audio_editx import StepAudioEditX

    seen = {}
    monkeypatch.setattr(StepAudioEditX, "load", lambda self: seen.setdefault("config", self.config) and self)
    args = cli.build_parser().parse_args(["clone", "--prompt-audio", "a.wav", "--text", "hi", "--models-dir",
                                          str(tmp_path), "--awq", "--quantize", "int8"])
    cli._engine(args)
    config = seen["config"]
    assert config.editx_dir == str(tmp_path / AWQ_DIRNAME) and config.quantize == "int8"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["clone", "--prompt-audio", "a.wav", "--text", "hi", "--quantize", "int3"])


def test_comfyui_memory_estimate_scales_the_language_model_for_quantize_on_load(tiny_model_root):
    from comfyui_step_audio_editx.engines.step_audio_editx import EngineConfig, GenerationSettings
    from comfyui_step_audio_editx.nodes import comfy_bridge
    from comfyui_step_audio_editx.nodes.engine_cache import EngineHandle

    def estimate(quantize: str) -> int:
        config = EngineConfig(search_roots=(str(tiny_model_root),), dtype="bf16", quantize=quantize)
        return comfy_bridge._estimated_load_bytes(EngineHandle(config, GenerationSettings(), 0), torch.device("cpu"))

    editx = tiny_model_root / "Step-Audio-EditX"
    lm = sum(f.stat().st_size for f in editx.glob("*.safetensors"))
    assert estimate("none") - estimate("int4") == pytest.approx((1 - 0.35) * lm * 1.1, rel=1e-6, abs=2)
    assert estimate("none") > estimate("int8") > estimate("int4") > 0
