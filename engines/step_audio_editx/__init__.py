"""Step-Audio-EditX engine library: the public API (callers outside this package import from here).

    from comfyui_step_audio_editx.engines.step_audio_editx import StepAudioEditX, EngineConfig, EditRequest
    engine = StepAudioEditX(EngineConfig(search_roots=("models",))).load()
    result = engine.edit(EditRequest(waveform, 24000, "what the clip says", "emotion", "happy"))

Names load on first use (PEP 562): importing a light submodule (the vocabulary, the CLI's choices) does
not pull in torch and the model code, so ``step-audio-editx --help`` and argument errors are instant.
"""

from __future__ import annotations

import importlib


def _names(module: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, module)


_EXPORTS: dict[str, str] = {
    **_names(".constants", "AUDIO_TOKENS_PER_SECOND", "MAX_CONTEXT_TOKENS", "MAX_INPUT_SECONDS", "MIN_INPUT_SECONDS",
             "OUTPUT_SAMPLE_RATE", "TOKENIZER_SAMPLE_RATE", "TOKENS_PER_GROUP", "ATTENTION_CHOICES", "DTYPE_CHOICES",
             "AWQ_DIRNAME", "QUANTIZE_CHOICES"),
    **_names(".engine", "EngineConfig", "StepAudioEditX", "derive_seed"),
    **_names(".frontend.audio", "AudioInputError", "load_audio", "validate_audio"),
    **_names(".frontend.context", "clip_digest"),
    **_names(".model_files", "EDITX_DIRNAME", "TOKENIZER_DIRNAME", "ModelFilesError", "ModelFolders",
             "find_model_folders", "resolve_model_folders"),
    **_names(".model_loader", "AttentionBackendError", "backend_unavailable_reason", "choose_dtype",
             "detect_attn_implementation", "load_step1", "resolve_attn_implementation", "resolve_device"),
    **_names(".prompts", "build_clone_prompt", "build_edit_prompt", "check_paralinguistic_text"),
    **_names(".request_checks", "check_clone_request", "check_edit_request", "needs_transcript"),
    **_names(".text_tokenizer", "TextTokenizer"),
    **_names(".tiny_models", "write_random_model", "write_tiny_model"),
    **_names(".token_budget", "estimate_clone_tokens", "estimate_edit_tokens"),
    **_names(".types", "AudioResult", "CloneRequest", "EditRequest", "EmptyGenerationError", "GenerationSettings",
             "PassResult", "Progress", "ProgressCallback", "SamplingConfig", "StopReason", "Timings"),
    **_names(".vocabulary", "DIALECTS", "EDIT_TYPES", "EMOTIONS", "MAX_EDIT_ITERATIONS", "PARALINGUISTIC_TAGS", "SPEEDS",
             "STYLES", "TRANSCRIPT_FREE_EDITS", "VocabularyError", "check_edit_type", "check_edit_value",
             "PARALINGUISTIC_TAGS_ORIGINAL", "WEIGHTS_RELEASE_CURRENT", "WEIGHTS_RELEASE_ORIGINAL", "WEIGHTS_RELEASES"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
