"""Model-loader choices: attention backend per model type, dtype, device, transformers' dtype keyword,
and the wording of missing-file errors. No model files needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import HUB_REPO_EDITX, HUB_REPO_TOKENIZER
from comfyui_step_audio_editx.engines.step_audio_editx.model_loader import (
    MODEL_BACKENDS,
    AttentionBackendError,
    ModelFilesError,
    choose_dtype,
    detect_attn_implementation,
    dtype_kwargs,
    resolve_attn_implementation,
    resolve_device,
    transformers_dtype_kwarg,
)

CPU = torch.device("cpu")


def test_step1_never_lists_or_picks_flash_attention():
    assert "flash_attention_2" not in MODEL_BACKENDS["step1"]
    assert detect_attn_implementation("step1", CPU) in MODEL_BACKENDS["step1"]
    assert detect_attn_implementation("step1", "cpu") == "sdpa"  # exact, and the fastest on CPU


def test_step1_flash_request_is_a_clear_error():
    with pytest.raises(AttentionBackendError, match="sqrt-ALiBi"):
        resolve_attn_implementation("flash_attention_2", "step1", CPU)


@pytest.mark.parametrize("name", ["eager", "sdpa", "flex_attention"])
def test_step1_explicit_cpu_backends_resolve(name):
    assert resolve_attn_implementation(name, "step1", CPU) == name


def test_unknown_or_unavailable_backends_are_refused():
    with pytest.raises(AttentionBackendError, match="Unknown"):
        resolve_attn_implementation("fast", "step1", CPU)
    with pytest.raises(AttentionBackendError, match="unavailable"):
        resolve_attn_implementation("xformers", "step1", CPU)  # CUDA only
    with pytest.raises(AttentionBackendError, match="No attention rules"):
        detect_attn_implementation("resnet", CPU)


def test_dtype_choice():
    assert choose_dtype(CPU) == torch.float32
    assert choose_dtype("cpu", "bf16") == torch.bfloat16
    assert choose_dtype(CPU, torch.float16) == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype"):
        choose_dtype(CPU, "int8")


def test_device_choice():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_dtype_keyword_is_detected_once_for_the_installed_transformers():
    import transformers
    from packaging.version import Version

    name = transformers_dtype_kwarg()
    assert name == ("dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype")
    assert dtype_kwargs(torch.bfloat16) == {name: torch.bfloat16}
    assert transformers_dtype_kwarg.cache_info().currsize == 1


def test_model_files_error_names_folder_file_and_hub_repo(tmp_path):
    error = ModelFilesError(tmp_path / "Step-Audio-EditX", "config.json")
    assert isinstance(error, FileNotFoundError)
    text = str(error)
    assert str(Path(tmp_path / "Step-Audio-EditX")) in text and "config.json" in text and HUB_REPO_EDITX in text
    other = ModelFilesError(tmp_path, "linguistic_tokenizer.npy", repo=HUB_REPO_TOKENIZER)
    assert HUB_REPO_TOKENIZER in str(other) and HUB_REPO_EDITX not in str(other)
