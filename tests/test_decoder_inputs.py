"""Token2Wav input handling: lengths, ragged tails, bad inputs, missing or mismatched files, weight norm."""

from __future__ import annotations

import shutil

import pytest
import torch

from comfyui_step_audio_editx.engines.step_audio_editx import constants as C
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.config import CONFIG_FILENAME
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.errors import DecoderWeightsError, Token2WavInputError
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.token2wav import Token2Wav, Token2WavInput
from comfyui_step_audio_editx.engines.step_audio_editx.decoder.weights import MissingDecoderFileError
from comfyui_step_audio_editx.engines.step_audio_editx.model_files import ModelFilesError
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import AttentionBackendError

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def folder(parity):
    return parity.editx_dir / C.COSYVOICE_SUBDIR


@pytest.fixture(scope="module")
def t2w(folder) -> Token2Wav:
    return Token2Wav.from_folder(folder, device="cpu")


@pytest.fixture(scope="module")
def prompt(parity):
    z = parity.npz("token2wav")
    return (z["prompt_vq0206_with_offsets"].tolist(), torch.from_numpy(z["prompt_mel"]),
            torch.from_numpy(z["prompt_spk_embedding"]), z["generated_ids_with_offsets"].tolist())


def test_output_length_per_group_and_ragged_tails(t2w, prompt):
    ids_p, mel, spk, gen = prompt
    assert t2w.samples_per_group == C.SAMPLES_PER_GROUP
    lengths = [1, 4, 5, 6, min(11, len(gen))]  # the full fixture stream is covered by the parity tests
    items = [Token2WavInput(gen[:n], ids_p, mel, spk) for n in lengths]
    gens = [torch.Generator().manual_seed(n) for n in lengths]
    outs = t2w.decode(items, gens)
    for n, out in zip(lengths, outs):
        groups = -(-n // C.TOKENS_PER_GROUP)
        assert out.waveform.shape == (C.SAMPLES_PER_GROUP * groups,)
        assert out.mel.shape == (t2w.config.flow.output_size, 3 * t2w.config.mel_frames_per_token_frame * groups)
        assert out.f0.shape == (out.mel.shape[1],)
        assert torch.isfinite(out.waveform).all() and float(out.waveform.abs().max()) > 0


def test_bad_inputs_raise_clear_errors(t2w, prompt):
    ids_p, mel, spk, gen = prompt
    with pytest.raises(Token2WavInputError, match="generated_ids is empty"):
        t2w.decode([Token2WavInput([], ids_p, mel, spk)])
    with pytest.raises(Token2WavInputError, match="prompt_ids is empty"):
        t2w.decode([Token2WavInput(gen, [], mel, spk)])
    with pytest.raises(Token2WavInputError, match="empty"):
        t2w.decode([])
    with pytest.raises(Token2WavInputError, match=rf"generated_ids\[{len(gen)}\] = {C.EOT_ID}"):
        t2w.decode([Token2WavInput(gen + [C.EOT_ID], ids_p, mel, spk)])
    with pytest.raises(Token2WavInputError, match="prompt_mel must be"):
        t2w.decode([Token2WavInput(gen, ids_p, mel.T, spk)])
    with pytest.raises(Token2WavInputError, match="speaker_embedding"):
        t2w.decode([Token2WavInput(gen, ids_p, mel, spk[:10])])
    with pytest.raises(Token2WavInputError, match="generators"):
        t2w.decode([Token2WavInput(gen, ids_p, mel, spk)], [torch.Generator(), torch.Generator()])
    with pytest.raises(Token2WavInputError, match="cfm_noise"):
        t2w.decode([Token2WavInput(gen, ids_p, mel, spk)], cfm_noise=[torch.zeros(80, 3)])


def test_seeded_decoding_is_reproducible(t2w, prompt):
    ids_p, mel, spk, gen = prompt
    item = Token2WavInput(gen[:20], ids_p, mel, spk)
    a = t2w.decode_one(item, torch.Generator().manual_seed(7))
    b = t2w.decode_one(item, torch.Generator().manual_seed(7))
    c = t2w.decode_one(item, torch.Generator().manual_seed(8))
    assert torch.equal(a.waveform, b.waveform) and torch.equal(a.mel, b.mel)
    assert float((a.mel - c.mel).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["flow.pt", "hift.pt", CONFIG_FILENAME])
def test_missing_file_names_file_and_hub_repo(folder, tmp_path, name):
    for f in (CONFIG_FILENAME, "flow.pt", "hift.pt"):
        if f != name:
            shutil.copy(folder / f, tmp_path / f)
    with pytest.raises(MissingDecoderFileError) as err:
        Token2Wav.from_folder(tmp_path, device="cpu")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ModelFilesError)
    assert name in str(err.value) and C.HUB_REPO_EDITX in str(err.value)


def test_legacy_weight_norm_layout_loads_identically(folder, tmp_path, t2w):
    state = torch.load(folder / "hift.pt", map_location="cpu", weights_only=True)
    legacy = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        legacy[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    assert any(k.endswith(".weight_g") for k in legacy)
    torch.save(legacy, tmp_path / "hift.pt")
    for f in (CONFIG_FILENAME, "flow.pt"):
        shutil.copy(folder / f, tmp_path / f)
    other = Token2Wav.from_folder(tmp_path, device="cpu")
    mine, theirs = t2w.hift.state_dict(), other.hift.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_checkpoint_that_does_not_match_the_yaml(folder, tmp_path):
    text = (folder / CONFIG_FILENAME).read_text(encoding="utf-8")
    units = None
    for line in text.splitlines():
        if line.strip().startswith("linear_units:"):
            units = int(line.split(":")[1].split("#")[0])
    assert units is not None
    doubled = units * 2
    (tmp_path / CONFIG_FILENAME).write_text(text.replace(f"linear_units: {units}", f"linear_units: {doubled}"))
    for f in ("flow.pt", "hift.pt"):
        shutil.copy(folder / f, tmp_path / f)
    with pytest.raises(DecoderWeightsError, match="flow.pt does not match cosyvoice.yaml.*shape mismatch"):
        Token2Wav.from_folder(tmp_path, device="cpu")


def test_attention_choice_is_checked(t2w):
    with pytest.raises(AttentionBackendError):
        Token2Wav.build(t2w.config, device="cpu", attn_implementation="flash_attention_2")
    eager = Token2Wav.build(t2w.config, device="cpu", attn_implementation="eager")
    assert eager.dit_attn == "eager" and eager.conformer_attn == "eager"
