"""Choices made once per load (attention backend, dtype, device) and loading the Step1 LM from a folder.

The general priority is flash_attention_2 > xformers > sdpa > eager, limited to what is installed,
what the device can run and what the model's math allows. Step1's sqrt-ALiBi bias cannot be expressed
by flash-attn's linear ``alibi_slopes``, so for ``step1`` only bias-capable backends are candidates.
(The seed forced eager for step1 because the hub's remote code supports nothing else; our native
Step1 lifts that rule: every backend in ``MODEL_BACKENDS["step1"]`` computes the exact sqrt-ALiBi.)

``load_step1`` reads an official model folder (config.json + single or sharded safetensors) into the
native ``Step1ForCausalLM`` without executing any code from the folder: the model is built on the meta
device, then every tensor is read from the memory-mapped file straight onto the target device and cast
there to the target dtype: host RAM holds one tensor in flight (plus the model itself when the target is
the CPU), never a full fp32 copy of the bf16 weights. A missing file raises ``ModelFilesError`` (folder,
file, hub repo); a checkpoint whose tensors do not match the config (for example no ``lm_head.weight``)
raises ``Step1CheckpointError``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .constants import (
    ATTENTION_CHOICES,
    DTYPE_CHOICES,
    HUB_REPO_EDITX,
    HUB_REPO_EDITX_AWQ,
    MODEL_CONFIG_FILE,
    SAFETENSORS_INDEX_FILE,
    SAFETENSORS_SINGLE_FILE,
    TRANSFORMERS_DTYPE_KWARG_VERSION,
)
from .file_readers import read_model_text
from .model_files import ModelFilesError as _MissingFilesError

if TYPE_CHECKING:
    from .lm.step1 import Step1ForCausalLM

logger = logging.getLogger(__name__)

GENERAL_PRIORITY: tuple[str, ...] = ("flash_attention_2", "xformers", "sdpa", "eager")

# Per model type: the backends whose math can express the model's attention, fastest first.
MODEL_BACKENDS: dict[str, tuple[str, ...]] = {
    # sqrt-ALiBi needs an additive float bias (or a score_mod): no flash_attention_2.
    "step1": ("sdpa", "xformers", "flex_attention", "eager"),
    # The flow's DiT estimator has no positional bias: the general priority applies as written.
    "dit": GENERAL_PRIORITY,
    # The Conformer's relative-position attention adds a content-dependent bias: sdpa or eager.
    "conformer": ("sdpa", "eager"),
}

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class AttentionBackendError(ValueError):
    """An attention backend the model's math or this machine cannot run."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _device(device: torch.device | str) -> torch.device:
    return torch.device(device) if not isinstance(device, torch.device) else device


def backend_unavailable_reason(name: str, device: torch.device | str) -> str | None:
    """Why ``name`` cannot run on ``device`` here, or None when it can."""
    device = _device(device)
    if name == "flash_attention_2":
        if device.type != "cuda":
            return "flash-attn runs on CUDA GPUs only"
        if not _installed("flash_attn"):
            return "the flash-attn package is not installed (pip install 'comfyui-step-audio-editx[flash]')"
        if torch.cuda.get_device_capability(device)[0] < 8:
            return "flash-attn needs a GPU of compute capability 8.0 or newer"
        return None
    if name == "xformers":
        if device.type != "cuda":
            return "xformers' memory-efficient kernels run on CUDA GPUs only"
        if not _installed("xformers"):
            return "the xformers package is not installed (pip install 'comfyui-step-audio-editx[xformers]')"
        return _xformers_kernel_problem(str(device))
        return None
    if name == "flex_attention":
        if not _installed("torch.nn.attention.flex_attention"):
            return f"torch {torch.__version__} has no FlexAttention (needs torch >= 2.5)"
        return None
    if name in ("sdpa", "eager"):
        return None
    raise AttentionBackendError(f"Unknown attention backend {name!r}; choose one of {', '.join(ATTENTION_CHOICES)}.")


@lru_cache(maxsize=None)
def _xformers_kernel_problem(device: str) -> str | None:
    """xformers imports even when its CUDA kernels were built for another torch: run one tiny call to know."""
    try:
        from xformers.ops import memory_efficient_attention

        q = torch.zeros(1, 8, 1, 64, device=device, dtype=torch.float16)
        memory_efficient_attention(q, q, q)
        return None
    except Exception as exc:  # any failure means the kernels are unusable here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"xformers is installed but its CUDA kernels do not run with torch {torch.__version__} ({first})"


@lru_cache(maxsize=None)
def _detect(model_type: str, device_str: str) -> str:
    device = torch.device(device_str)
    for name in MODEL_BACKENDS[model_type]:
        if name == "flex_attention" and device.type != "cuda":
            continue  # without compilation flex_attention is a slow reference path: never auto-picked on CPU
        reason = backend_unavailable_reason(name, device)
        if reason is None:
            logger.info("Attention for %s on %s: %s (first available of %s)", model_type, device, name,
                        ", ".join(MODEL_BACKENDS[model_type]))
            return name
        logger.debug("Attention for %s: skipping %s (%s)", model_type, name, reason)
    return "eager"


def detect_attn_implementation(model_type: str, device: torch.device | str) -> str:
    """The fastest exact attention backend for ``model_type`` on ``device`` (logged once)."""
    if model_type not in MODEL_BACKENDS:
        raise AttentionBackendError(
            f"No attention rules for model type {model_type!r}; known: {', '.join(MODEL_BACKENDS)}."
        )
    return _detect(model_type, str(_device(device)))


def resolve_attn_implementation(requested: str, model_type: str, device: torch.device | str) -> str:
    """``auto`` -> detection; an explicit name is checked against the model's math and this machine."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return detect_attn_implementation(model_type, device)
    if requested not in ATTENTION_CHOICES:
        raise AttentionBackendError(
            f"Unknown attention backend {requested!r}; choose one of {', '.join(ATTENTION_CHOICES)}."
        )
    allowed = MODEL_BACKENDS[model_type]
    if requested not in allowed:
        why = (" flash-attn's linear ALiBi cannot express Step1's sqrt-ALiBi bias."
               if model_type == "step1" and requested == "flash_attention_2" else "")
        raise AttentionBackendError(
            f"Attention backend {requested!r} cannot run {model_type}.{why} Use one of {', '.join(allowed)} or 'auto'."
        )
    reason = backend_unavailable_reason(requested, device)
    if reason is not None:
        raise AttentionBackendError(f"Attention backend {requested!r} is unavailable: {reason}. Use 'auto'.")
    return requested


def choose_dtype(device: torch.device | str, requested: str | torch.dtype = "auto") -> torch.dtype:
    """bf16 on CUDA capability >= 8.0, fp16 on older GPUs, fp32 on CPU; an explicit choice wins."""
    if isinstance(requested, torch.dtype):
        return requested
    requested = (requested or "auto").strip().lower()
    if requested != "auto":
        if requested not in _DTYPES:
            raise ValueError(f"Unknown dtype {requested!r}; choose one of {', '.join(DTYPE_CHOICES)}.")
        return _DTYPES[requested]
    device = _device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve_device(requested: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU."""
    if isinstance(requested, torch.device):
        return requested
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {requested!r} was asked for but this PyTorch sees no CUDA GPU; use 'cpu' or 'auto'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"Device {requested!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                         "GPU(s), numbered from 0; use 'cuda:0' or 'auto'.")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"Device {requested!r} was asked for but this PyTorch has no Apple GPU (MPS) backend; "
                         "use 'cpu' or 'auto'.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Device {requested!r} is not supported; use auto, cpu, cuda, cuda:N or mps.")
    return device


# --- transformers version quirks ----------------------------------------------------------------------

@lru_cache(maxsize=1)
def transformers_dtype_kwarg() -> str:
    """The dtype keyword of ``from_pretrained`` / ``_from_config``: ``dtype`` on transformers >= 4.56, else
    ``torch_dtype`` (passing neither loads fp32). Detected once per process."""
    import transformers
    from packaging.version import Version

    installed = Version(transformers.__version__).release
    return "dtype" if installed >= Version(TRANSFORMERS_DTYPE_KWARG_VERSION).release else "torch_dtype"


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": dtype}`` or ``{"torch_dtype": dtype}``, whichever the installed transformers reads."""
    return {transformers_dtype_kwarg(): dtype}


# --- loading Step1 from a model folder -------------------------------------------------------------------

class ModelFilesError(_MissingFilesError):
    """A model folder lacks a file the loader needs; the message names the folder, the file and the hub repo.

    A ``FileNotFoundError``, and a ``model_files.ModelFilesError``: one ``except`` catches both kinds."""

    def __init__(self, folder: Path | str, missing: str, repo: str = HUB_REPO_EDITX, detail: str = "") -> None:
        self.folder = Path(folder)
        self.missing = missing
        self.repo = repo
        extra = f" {detail}" if detail else ""
        super().__init__(
            f"Model folder {self.folder} is missing {missing}.{extra} Get the official files from the Hugging Face "
            f"hub repo {repo} (for example: huggingface-cli download {repo} --local-dir {self.folder})."
        )


class Step1CheckpointError(ValueError):
    """The folder's config or tensors do not describe a Step1 model (wrong type, missing or extra tensors)."""

    def __init__(self, folder: Path | str, problem: str, repo: str = HUB_REPO_EDITX) -> None:
        self.folder = Path(folder)
        super().__init__(
            f"Model folder {self.folder}: {problem} Re-download the official files from the Hugging Face hub repo "
            f"{repo}."
        )


def _safetensors_shards(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files: the shards an index names (each must exist), else model.safetensors, else *.safetensors."""
    index_path = folder / SAFETENSORS_INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(read_model_text(index_path, HUB_REPO_EDITX))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise Step1CheckpointError(folder, f"{SAFETENSORS_INDEX_FILE} is not a safetensors index ({exc}).") from exc
        names = sorted(set(weight_map.values()))
        for name in names:
            if not (folder / name).is_file():
                raise ModelFilesError(folder, f"the weight shard {name}", detail=f"{SAFETENSORS_INDEX_FILE} lists it.")
        return [folder / name for name in names], weight_map
    single = folder / SAFETENSORS_SINGLE_FILE
    if single.is_file():
        return [single], None
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise ModelFilesError(folder, f"the weights ({SAFETENSORS_INDEX_FILE} with its shards, or *.safetensors)")
    return found, None


def _tensor_inventory(folder: Path, shards: list[Path], weight_map: dict[str, str] | None
                      ) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Tensor name -> (shard, shape), read from the safetensors headers only (no tensor data)."""
    from safetensors import safe_open

    inventory: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as handle:
                for key in handle.keys():
                    if key in inventory:
                        raise Step1CheckpointError(folder, f"tensor {key!r} is stored twice ({inventory[key][0].name}, "
                                                           f"{shard.name}).")
                    inventory[key] = (shard, tuple(handle.get_slice(key).get_shape()))
        except Step1CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise Step1CheckpointError(folder, f"{shard.name} is not a readable safetensors file ({exc}).") from exc
    if weight_map is not None:
        for key, name in weight_map.items():
            if key not in inventory or inventory[key][0].name != name:
                raise Step1CheckpointError(folder, f"{SAFETENSORS_INDEX_FILE} places {key!r} in {name}, "
                                                   "but that file does not hold it.")
    return inventory


def _check_tensors(folder: Path, expected: dict[str, tuple[int, ...]],
                   inventory: dict[str, tuple[Path, tuple[int, ...]]]) -> None:
    """Every parameter present with its shape, nothing extra; lm_head is never silently tied."""
    missing = sorted(set(expected) - set(inventory))
    if "lm_head.weight" in missing:
        raise Step1CheckpointError(
            folder, "the checkpoint has no 'lm_head.weight'. Step1's output head is a separate matrix that is never "
                    "tied to the embedding (a tied head makes the model hum until max tokens), so the checkpoint "
                    "must store it."
        )
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise Step1CheckpointError(folder, f"the checkpoint lacks {len(missing)} Step1 tensors: {shown}.")
    unexpected = sorted(set(inventory) - set(expected))
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise Step1CheckpointError(
            folder, f"the checkpoint holds {len(unexpected)} tensors a bf16/fp16 Step1 does not have ({shown}); "
                    "quantized tensors load only with a compressed-tensors quantization_config in config.json."
        )
    for key, shape in expected.items():
        found = inventory[key][1]
        if found != shape:
            raise Step1CheckpointError(folder, f"tensor {key!r} has shape {list(found)} but config.json implies "
                                               f"{list(shape)}.")


def _safetensors_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return str(device)


def load_step1(model_dir: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
               attn_implementation: str = "auto", quantize: str | None = None) -> Step1ForCausalLM:
    """Load the Step1 LM of an official Step-Audio-EditX folder, ready for inference (eval, no grad).

    ``model_dir``: folder with ``config.json`` (model_type "step1"; its ``auto_map`` is ignored, nothing from
    the folder is executed) and the safetensors weights (an index with its shards, or single files).
    ``device``: "auto" (first GPU, else CPU) or a device. ``dtype``: "auto" (bf16 on CUDA >= 8.0, fp16 on
    older GPUs, fp32 on CPU), "bf16", "fp16", "fp32" or a torch dtype. ``attn_implementation``: "auto" or
    one of eager / sdpa / flex_attention / xformers (flash_attention_2 cannot express sqrt-ALiBi: error).
    ``quantize``: "none" (default), "int8" or "int4": quantize the layers' projections as they are read
    (weight-only, group 128). A compressed-tensors checkpoint (StepFun's AWQ 4-bit) loads quantized as stored.
    """
    from .lm.quant.format import QuantFormatError
    from .lm.quant.loading import plan_quantization
    from .lm.step1 import Step1Config, Step1ForCausalLM

    start = time.perf_counter()
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise ModelFilesError(folder, "entirely (no such folder)")
    config_path = folder / MODEL_CONFIG_FILE
    if not config_path.is_file():
        raise ModelFilesError(folder, MODEL_CONFIG_FILE)
    try:
        raw_config = json.loads(read_model_text(config_path, HUB_REPO_EDITX))
    except json.JSONDecodeError as exc:
        raise Step1CheckpointError(folder, f"{MODEL_CONFIG_FILE} is not valid JSON ({exc}).") from exc
    if raw_config.get("model_type") != Step1Config.model_type:
        raise Step1CheckpointError(folder, f"{MODEL_CONFIG_FILE} has model_type {raw_config.get('model_type')!r}, "
                                           f"expected {Step1Config.model_type!r}.")
    shards, weight_map = _safetensors_shards(folder)

    target_device = resolve_device(device)
    target_dtype = choose_dtype(target_device, dtype)
    attn = resolve_attn_implementation(attn_implementation, "step1", target_device)
    config = Step1Config.from_pretrained(str(folder))
    with torch.device("meta"):
        model = Step1ForCausalLM._from_config(config, attn_implementation=attn, **dtype_kwargs(target_dtype))
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    inventory = _tensor_inventory(folder, shards, weight_map)
    try:
        plan = plan_quantization(folder, raw_config, set(inventory), config.num_hidden_layers, quantize)
        if plan is not None:
            expected = plan.expected(expected)
            plan.apply(model, target_dtype)
    except QuantFormatError as exc:
        raise Step1CheckpointError(folder, str(exc), repo=HUB_REPO_EDITX_AWQ) from exc
    _check_tensors(folder, expected, inventory)

    from safetensors import safe_open

    by_shard: dict[Path, list[str]] = {}
    for key, (shard, _) in inventory.items():
        by_shard.setdefault(shard, []).append(key)
    with tqdm(total=len(inventory), desc="Loading Step1", unit="tensor", disable=None) as progress:
        for shard, keys in by_shard.items():
            with safe_open(str(shard), framework="pt", device=_safetensors_device(target_device)) as handle:
                for key in keys:
                    tensor = handle.get_tensor(key)
                    if plan is not None and plan.store(model, key, tensor, target_dtype):
                        progress.update()
                        continue
                    if tensor.dtype != target_dtype:
                        tensor = tensor.to(target_dtype)
                    module_name, _, param_name = key.rpartition(".")
                    setattr(model.get_submodule(module_name), param_name,
                            torch.nn.Parameter(tensor, requires_grad=False))
                    progress.update()
    still_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if still_meta:  # every expected tensor was checked above, so this is a loader bug
        raise RuntimeError(f"Step1 tensors left unloaded: {still_meta[:5]}")

    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    model.config._name_or_path = str(folder)
    model.eval()
    quant = "" if plan is None else (f", {plan.scheme.name} weights (group {plan.scheme.group_size}, "
                                     f"{'stored' if plan.stored else 'quantized on load'})")
    logger.info("Loaded Step1 from %s: %d layers, %.2f GB of weights, %s on %s%s, attention %s (%.1f s)", folder,
                config.num_hidden_layers, sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e9,
                str(target_dtype).removeprefix("torch."), target_device, quant, attn, time.perf_counter() - start)
    return model
