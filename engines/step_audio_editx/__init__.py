"""Step-Audio-EditX engine library: the public API (callers outside this package import from here)."""

from .constants import OUTPUT_SAMPLE_RATE, TOKENIZER_SAMPLE_RATE
from .model_loader import choose_dtype, detect_attn_implementation, resolve_attn_implementation, resolve_device

__all__ = [
    "OUTPUT_SAMPLE_RATE",
    "TOKENIZER_SAMPLE_RATE",
    "choose_dtype",
    "detect_attn_implementation",
    "resolve_attn_implementation",
    "resolve_device",
]
