"""Choices made once per load: which attention backend and which dtype each part runs in.

The general priority is flash_attention_2 > xformers > sdpa > eager, limited to what is installed,
what the device can run and what the model's math allows. Step1's sqrt-ALiBi bias cannot be expressed
by flash-attn's linear ``alibi_slopes``, so for ``step1`` only bias-capable backends are candidates.
(The seed forced eager for step1 because the hub's remote code supports nothing else; our native
Step1 lifts that rule.)
"""

from __future__ import annotations

import importlib.util
import logging
from functools import lru_cache

import torch

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

ATTENTION_CHOICES: tuple[str, ...] = ("auto", "flash_attention_2", "xformers", "sdpa", "flex_attention", "eager")
DTYPE_CHOICES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
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
        return None
    if name == "flex_attention":
        if not _installed("torch.nn.attention.flex_attention"):
            return f"torch {torch.__version__} has no FlexAttention (needs torch >= 2.5)"
        return None
    if name in ("sdpa", "eager"):
        return None
    raise AttentionBackendError(f"Unknown attention backend {name!r}; choose one of {', '.join(ATTENTION_CHOICES)}.")


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
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {requested!r} was asked for but this PyTorch sees no CUDA GPU; use 'cpu' or 'auto'.")
    return device
