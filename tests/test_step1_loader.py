"""Loader traps for Step1 folders, on real files: every folder here is built in tmp_path from the parity
set's official-format model folder (config.json + bf16 safetensors), copied and then modified.

Traps: a config without ``tie_word_embeddings`` (transformers >= 4.54 would tie: humming audio), a
checkpoint without ``lm_head.weight``, the dtype keyword that changed name in transformers 4.56, missing
files, and a config whose ``auto_map`` names remote code that must never run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import backend_unavailable_reason
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import (
    HUB_REPO_EDITX,
    SAFETENSORS_INDEX_FILE,
    SAFETENSORS_SINGLE_FILE,
)
from comfyui_step_audio_editx.engines.step_audio_editx.lm.attention import Step1AttentionError
from comfyui_step_audio_editx.engines.step_audio_editx.lm.step1 import Step1Config, Step1ForCausalLM
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import (
    AttentionBackendError,
    ModelFilesError,
    Step1CheckpointError,
    dtype_kwargs,
    load_step1,
    transformers_dtype_kwarg,
)
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

MODEL_FILES = ("config.json", SAFETENSORS_INDEX_FILE)
PROBE_IDS = torch.tensor([[1, 4, 9, 78, 65536, 66600, 70000, 3, 2, 17]])


@pytest.fixture(scope="module")
def source(parity) -> Path:
    return parity.editx_dir


@pytest.fixture(scope="module")
def tensors(source) -> dict[str, torch.Tensor]:
    """All tensors of the source checkpoint as stored (bf16), read with safetensors."""
    index = json.loads((source / SAFETENSORS_INDEX_FILE).read_text())
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(source / shard), framework="pt") as handle:
            out.update({key: handle.get_tensor(key) for key in handle.keys()})
    return out


@pytest.fixture(scope="module")
def reference_logits(source) -> torch.Tensor:
    model = load_step1(source, device="cpu", dtype="fp32", attn_implementation="eager")
    with torch.no_grad():
        return model(PROBE_IDS, use_cache=False).logits


def _copy_folder(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(source / name, target / name)
    index = json.loads((source / SAFETENSORS_INDEX_FILE).read_text())
    for shard in set(index["weight_map"].values()):
        shutil.copy2(source / shard, target / shard)
    return target


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _write_shards(folder: Path, tensors: dict[str, torch.Tensor], shards: list[list[str]]) -> None:
    """Replace the weights with the given key groups, one real safetensors file each, plus their index."""
    for old in folder.glob("*.safetensors"):
        old.unlink()
    weight_map = {}
    for number, keys in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({key: tensors[key].contiguous() for key in keys}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in keys})
    total = sum(t.numel() * t.element_size() for key, t in tensors.items() if key in weight_map)
    (folder / SAFETENSORS_INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                             "weight_map": weight_map}))


def _assert_untied(model: Step1ForCausalLM, tensors: dict[str, torch.Tensor]) -> None:
    head, embed = model.lm_head.weight, model.get_input_embeddings().weight
    assert head.data_ptr() != embed.data_ptr()
    assert model.config.tie_word_embeddings is False
    assert torch.equal(head.detach().to(torch.bfloat16), tensors["lm_head.weight"])
    assert not torch.equal(head.detach().to(torch.bfloat16), tensors["model.embed_tokens.weight"])


# --- tied embeddings ---------------------------------------------------------------------------------

def test_config_without_tie_word_embeddings_loads_untied(source, tensors, reference_logits, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    _edit_config(folder, tie_word_embeddings=None)
    model = load_step1(folder, device="cpu", dtype="fp32", attn_implementation="eager")
    _assert_untied(model, tensors)
    with torch.no_grad():
        assert torch.equal(model(PROBE_IDS, use_cache=False).logits, reference_logits)
    via_auto = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False, **dtype_kwargs(torch.float32))
    _assert_untied(via_auto, tensors)


def test_config_asking_to_tie_still_loads_untied(source, tensors, tmp_path, caplog):
    folder = _copy_folder(source, tmp_path / "editx")
    _edit_config(folder, tie_word_embeddings=True)
    with caplog.at_level(logging.WARNING):
        model = load_step1(folder, device="cpu", dtype="fp32")
    _assert_untied(model, tensors)
    assert "untied" in caplog.text


def test_checkpoint_without_lm_head_is_a_clear_error(source, tensors, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    _write_shards(folder, tensors, [[key for key in tensors if key != "lm_head.weight"]])
    with pytest.raises(Step1CheckpointError) as info:
        load_step1(folder, device="cpu", dtype="fp32")
    message = str(info.value)
    assert "lm_head.weight" in message and str(folder) in message and HUB_REPO_EDITX in message
    assert "tied" in message


def test_checkpoint_with_extra_or_misshaped_tensors_is_refused(source, tensors, tmp_path):
    folder = _copy_folder(source, tmp_path / "extra")
    extra = dict(tensors, **{"model.layers.0.self_attn.q_proj.qweight": torch.zeros(2, 2, dtype=torch.int32)})
    _write_shards(folder, extra, [list(extra)])
    with pytest.raises(Step1CheckpointError, match="qweight"):
        load_step1(folder, device="cpu")
    folder = _copy_folder(source, tmp_path / "shape")
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, intermediate_size=config["intermediate_size"] * 2)
    with pytest.raises(Step1CheckpointError, match="mlp.*shape"):
        load_step1(folder, device="cpu")


# --- files: single, sharded, missing ------------------------------------------------------------------

def test_sharded_and_single_file_checkpoints_load_identically(source, tensors, reference_logits, tmp_path):
    sharded = _copy_folder(source, tmp_path / "sharded")
    keys = sorted(tensors)
    _write_shards(sharded, tensors, [keys[::3], keys[1::3], keys[2::3]])
    assert len(list(sharded.glob("*.safetensors"))) == 3
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy2(source / "config.json", single / "config.json")
    save_file({key: t.contiguous() for key, t in tensors.items()}, str(single / SAFETENSORS_SINGLE_FILE))
    for folder in (sharded, single):
        model = load_step1(folder, device="cpu", dtype="fp32", attn_implementation="eager")
        with torch.no_grad():
            assert torch.equal(model(PROBE_IDS, use_cache=False).logits, reference_logits), folder.name


def _assert_names(error: Exception, folder: Path, missing: str) -> None:
    message = str(error)
    assert str(folder) in message, message
    assert missing in message, message
    assert HUB_REPO_EDITX in message, message


def test_missing_config_names_folder_file_and_hub_repo(source, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFilesError) as info:
        load_step1(folder, device="cpu")
    assert isinstance(info.value, FileNotFoundError)
    _assert_names(info.value, folder, "config.json")


def test_missing_weights_names_folder_and_hub_repo(source, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    for path in list(folder.glob("*.safetensors")) + [folder / SAFETENSORS_INDEX_FILE]:
        path.unlink()
    with pytest.raises(ModelFilesError) as info:
        load_step1(folder, device="cpu")
    _assert_names(info.value, folder, ".safetensors")


def test_index_naming_a_missing_shard_names_that_shard(source, tensors, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    keys = sorted(tensors)
    _write_shards(folder, tensors, [keys[:10], keys[10:]])
    missing = "model-00002-of-00002.safetensors"
    (folder / missing).unlink()
    with pytest.raises(ModelFilesError) as info:
        load_step1(folder, device="cpu")
    _assert_names(info.value, folder, missing)


def test_missing_folder_and_wrong_model_type(source, tmp_path):
    with pytest.raises(ModelFilesError) as info:
        load_step1(tmp_path / "nowhere", device="cpu")
    _assert_names(info.value, tmp_path / "nowhere", "")
    folder = _copy_folder(source, tmp_path / "editx")
    _edit_config(folder, model_type="llama")
    with pytest.raises(Step1CheckpointError, match="model_type 'llama'"):
        load_step1(folder, device="cpu")


# --- remote code is never executed ----------------------------------------------------------------------

PLANTED = '''import pathlib
pathlib.Path(__file__).with_name("REMOTE_CODE_RAN").write_text("executed")
raise RuntimeError("remote code was executed")
'''


def test_auto_map_remote_code_is_never_executed(source, tensors, reference_logits, tmp_path):
    folder = _copy_folder(source, tmp_path / "editx")
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" in config, "the fixture config should name remote code like the official one"
    for module in {entry.split(".")[0] for entry in config["auto_map"].values()}:
        (folder / f"{module}.py").write_text(PLANTED)
    marker = folder / "REMOTE_CODE_RAN"

    model = load_step1(folder, device="cpu", dtype="fp32", attn_implementation="eager")
    assert isinstance(model, Step1ForCausalLM)
    with torch.no_grad():
        assert torch.equal(model(PROBE_IDS, use_cache=False).logits, reference_logits)
    for trust in ({"trust_remote_code": False}, {}):
        assert isinstance(AutoConfig.from_pretrained(folder, **trust), Step1Config)
        auto = AutoModelForCausalLM.from_pretrained(folder, **trust, **dtype_kwargs(torch.float32))
        assert isinstance(auto, Step1ForCausalLM)
        _assert_untied(auto, tensors)
    assert not marker.exists()


# --- dtype ------------------------------------------------------------------------------------------------

def test_dtype_keyword_matches_installed_transformers(source, tensors, caplog):
    import transformers
    from packaging.version import Version

    expected = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    assert transformers_dtype_kwarg() == expected
    with caplog.at_level(logging.WARNING):
        model = Step1ForCausalLM.from_pretrained(source, **dtype_kwargs(torch.bfloat16))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert "deprecated" not in caplog.text


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_load_step1_loads_straight_into_the_requested_dtype(source, tensors, dtype, expected):
    model = load_step1(source, device="cpu", dtype=dtype)
    state = model.state_dict()
    assert {t.dtype for t in state.values()} == {expected}
    assert model.dtype == expected
    for key, stored in tensors.items():  # the stored bf16 values, converted once
        assert torch.equal(state[key], stored.to(expected)), key
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


# --- attention backends ---------------------------------------------------------------------------------

def test_flash_attention_is_refused_for_step1(source):
    with pytest.raises(AttentionBackendError, match="sqrt-ALiBi"):
        load_step1(source, device="cpu", attn_implementation="flash_attention_2")
    config = Step1Config.from_pretrained(source)
    with pytest.raises(Step1AttentionError, match="sqrt-ALiBi"):
        Step1ForCausalLM._from_config(config, attn_implementation="flash_attention_2")
    with pytest.raises(Step1AttentionError, match="sqrt-ALiBi"):
        Step1ForCausalLM.from_pretrained(source, attn_implementation="flash_attention_2")


def test_default_attention_of_a_plain_transformers_load_is_exact(source, reference_logits):
    model = AutoModelForCausalLM.from_pretrained(source, **dtype_kwargs(torch.float32))
    assert model.config._attn_implementation in ("sdpa", "eager")
    with torch.no_grad():
        logits = model(PROBE_IDS, use_cache=False).logits
    assert torch.allclose(logits, reference_logits, atol=1e-4)


@pytest.mark.gpu
def test_xformers_backend_matches_eager_on_cuda(source):
    pytest.importorskip("xformers", reason="needs xformers + CUDA")
    if not torch.cuda.is_available():
        pytest.skip("needs xformers + CUDA")
    problem = backend_unavailable_reason("xformers", "cuda")
    if problem:
        pytest.skip(f"needs working xformers kernels: {problem}")
    ids = PROBE_IDS.repeat(2, 1).cuda()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    outputs = {}
    for backend in ("eager", "xformers"):
        model = load_step1(source, device="cuda", dtype="fp16", attn_implementation=backend)
        with torch.no_grad():
            outputs[backend] = model(ids, attention_mask=mask, use_cache=False).logits.float()
    assert torch.allclose(outputs["xformers"], outputs["eager"], atol=5e-2)
