"""lm stage: the native Step1 language model (transformers classes) and its sqrt-ALiBi attention.

Importing this package registers ``model_type "step1"`` with ``AutoConfig`` / ``AutoModel`` /
``AutoModelForCausalLM`` (so official folders load with ``trust_remote_code=False``) and, when xformers
imports, the ``xformers`` attention backend with transformers' ``AttentionInterface``.
"""

from .attention import (
    STEP1_ATTENTION_BACKENDS,
    AlibiPositions,
    Step1AttentionBias,
    Step1AttentionError,
    alibi_positions,
    alibi_slopes,
    dense_alibi_bias,
    make_attention_bias,
    step1_attention,
)
from .step1 import Step1Config, Step1ConfigError, Step1ForCausalLM, Step1Model, register_step1

__all__ = [
    "STEP1_ATTENTION_BACKENDS",
    "AlibiPositions",
    "Step1AttentionBias",
    "Step1AttentionError",
    "Step1Config",
    "Step1ConfigError",
    "Step1ForCausalLM",
    "Step1Model",
    "alibi_positions",
    "alibi_slopes",
    "dense_alibi_bias",
    "make_attention_bias",
    "register_step1",
    "step1_attention",
]
