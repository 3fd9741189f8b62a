"""Step-Audio-EditX engine library: the public API (callers outside this package import from here).

    from comfyui_step_audio_editx.engines.step_audio_editx import StepAudioEditX, EngineConfig, EditRequest
    engine = StepAudioEditX(EngineConfig(search_roots=("models",))).load()
    result = engine.edit(EditRequest(waveform, 24000, "what the clip says", "emotion", "happy"))
"""

from .constants import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_CONTEXT_TOKENS,
    MAX_INPUT_SECONDS,
    MIN_INPUT_SECONDS,
    OUTPUT_SAMPLE_RATE,
    TOKENIZER_SAMPLE_RATE,
    TOKENS_PER_GROUP,
)
from .engine import EngineConfig, StepAudioEditX, derive_seed
from .frontend.audio import AudioInputError, load_audio, validate_audio
from .frontend.context import clip_digest
from .lm.quant.loading import QUANTIZE_CHOICES
from .model_files import (
    AWQ_DIRNAME,
    EDITX_DIRNAME,
    TOKENIZER_DIRNAME,
    ModelFilesError,
    ModelFolders,
    find_model_folders,
    resolve_model_folders,
)
from .model_loader import (
    ATTENTION_CHOICES,
    DTYPE_CHOICES,
    AttentionBackendError,
    backend_unavailable_reason,
    choose_dtype,
    detect_attn_implementation,
    load_step1,
    resolve_attn_implementation,
    resolve_device,
)
from .prompts import build_clone_prompt, build_edit_prompt, check_paralinguistic_text
from .text_tokenizer import TextTokenizer
from .tiny_models import write_random_model, write_tiny_model
from .token_budget import estimate_clone_tokens, estimate_edit_tokens
from .types import (
    AudioResult,
    CloneRequest,
    EditRequest,
    GenerationSettings,
    PassResult,
    Progress,
    ProgressCallback,
    SamplingConfig,
    StopReason,
    Timings,
)
from .vocabulary import (
    DIALECTS,
    EDIT_TYPES,
    EMOTIONS,
    MAX_EDIT_ITERATIONS,
    PARALINGUISTIC_TAGS,
    PARALINGUISTIC_TAGS_ORIGINAL,
    SPEEDS,
    STYLES,
    TRANSCRIPT_FREE_EDITS,
    WEIGHTS_RELEASE_CURRENT,
    WEIGHTS_RELEASE_ORIGINAL,
    WEIGHTS_RELEASES,
    VocabularyError,
    check_edit_type,
    check_edit_value,
)

__all__ = [
    "ATTENTION_CHOICES", "AWQ_DIRNAME", "QUANTIZE_CHOICES", "TRANSCRIPT_FREE_EDITS", "TOKENS_PER_GROUP", "validate_audio", "clip_digest", "EDITX_DIRNAME", "MAX_INPUT_SECONDS", "MIN_INPUT_SECONDS", "TOKENIZER_DIRNAME", "check_edit_type", "check_edit_value", "AUDIO_TOKENS_PER_SECOND", "AttentionBackendError", "AudioInputError", "AudioResult",
    "CloneRequest", "DIALECTS", "DTYPE_CHOICES", "EDIT_TYPES", "EMOTIONS", "EditRequest", "EngineConfig",
    "GenerationSettings", "MAX_CONTEXT_TOKENS", "MAX_EDIT_ITERATIONS", "ModelFilesError", "ModelFolders",
    "OUTPUT_SAMPLE_RATE", "PARALINGUISTIC_TAGS", "PassResult", "Progress", "ProgressCallback", "SPEEDS", "STYLES",
    "SamplingConfig", "StepAudioEditX", "StopReason", "TOKENIZER_SAMPLE_RATE", "TextTokenizer", "Timings",
    "VocabularyError", "backend_unavailable_reason", "build_clone_prompt", "build_edit_prompt",
    "check_paralinguistic_text", "choose_dtype", "derive_seed", "detect_attn_implementation", "estimate_clone_tokens",
    "estimate_edit_tokens", "find_model_folders", "load_audio", "load_step1", "resolve_attn_implementation",
    "resolve_device", "resolve_model_folders", "write_random_model", "write_tiny_model",
    "PARALINGUISTIC_TAGS_ORIGINAL", "WEIGHTS_RELEASE_CURRENT", "WEIGHTS_RELEASE_ORIGINAL", "WEIGHTS_RELEASES",
]
