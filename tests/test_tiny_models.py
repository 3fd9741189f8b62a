"""make-tiny-model writes folders in the official layout that every real loader accepts."""

import json

import pytest
import torch

from comfyui_step_audio_editx.cli import main as cli_main
from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.paraformer import Vq02Tokenizer
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.semantic import Vq06Tokenizer
from comfyui_step_audio_editx.engines.step_audio_editx.frontend.speaker import SpeakerEncoder
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import load_step1
from comfyui_step_audio_editx.engines.step_audio_editx.text_tokenizer import TextTokenizer
from comfyui_step_audio_editx.engines.step_audio_editx.tiny_models import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    assert cli_main(["make-tiny-model", str(root), "--seed", "3"]) == 0
    return root


def test_layout_is_official(tiny):
    editx = tiny / "Step-Audio-EditX"
    config = json.loads((editx / "config.json").read_text())
    assert config["model_type"] == "step1" and "auto_map" in config and config["tie_word_embeddings"] is False
    index = json.loads((editx / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001.safetensors"}
    assert "lm_head.weight" in index["weight_map"] and "model.embed_tokens.weight" in index["weight_map"]
    hift = torch.load(editx / "CosyVoice-300M-25Hz" / "hift.pt", weights_only=True)
    assert "conv_pre.parametrizations.weight.original0" in hift and "source_downs.0.weight" in hift
    assert not any(k.endswith(".weight") and v.dim() >= 3 and not k.startswith("source_downs") for k, v in hift.items())


def test_every_loader_reads_it(tiny):
    editx, tok_dir = tiny / "Step-Audio-EditX", tiny / "Step-Audio-Tokenizer"
    tokenizer = TextTokenizer.from_folder(editx)
    assert tokenizer.vocab_size == C.TEXT_VOCAB_SIZE
    assert tokenizer.piece_to_id("<|EOT|>") == C.EOT_ID and tokenizer.piece_to_id("<|BOT|>") == C.BOT_ID
    assert tokenizer.encode("\n") == [C.NEWLINE_ID]
    assert tokenizer.piece_to_id("<audio_0>") == C.AUDIO_TOKEN_OFFSET
    lm = load_step1(editx, device="cpu", dtype="fp32")
    assert not lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()
    logits = lm(torch.tensor([[1, 4, 5, 66000]])).logits
    assert logits.shape == (1, 4, C.TEXT_VOCAB_SIZE) and torch.isfinite(logits).all()
    t2w = Token2Wav.from_folder(editx)
    assert t2w.sample_rate == C.OUTPUT_SAMPLE_RATE
    wav = 0.3 * torch.sin(torch.linspace(0, 2000, C.TOKENIZER_SAMPLE_RATE * 2))
    assert Vq02Tokenizer.from_folder(tok_dir).encode([wav])[0].numel() > 0
    assert Vq06Tokenizer.from_folder(tok_dir).encode([wav])[0].numel() == 50  # 25 Hz x 2 s
    assert SpeakerEncoder.from_folder(editx / "CosyVoice-300M-25Hz").embed([wav]).shape == (1, 192)


def test_same_seed_same_files(tmp_path):
    a = write_tiny_model(tmp_path / "a", seed=1)
    b = write_tiny_model(tmp_path / "b", seed=1)
    for rel in ("model-00001.safetensors", "CosyVoice-300M-25Hz/flow.pt", "tokenizer.model"):
        assert (a.editx / rel).read_bytes() == (b.editx / rel).read_bytes(), rel
