"""Step Audio EditX Engine: how the model is loaded and the generation defaults, as a handle for other nodes.

The node loads nothing: the engine loads on first use by a generating node and is shared by every
handle with the same load config.
"""

from __future__ import annotations

from ..engines.step_audio_editx import (
    ATTENTION_CHOICES,
    DTYPE_CHOICES,
    QUANTIZE_CHOICES,
    EngineConfig,
    GenerationSettings,
    WEIGHTS_RELEASE_CURRENT,
    WEIGHTS_RELEASES,
    SamplingConfig,
    backend_unavailable_reason,
)
from . import comfy_bridge as bridge
from .engine_cache import EngineHandle
from .model_folders import AUTO_DOWNLOAD, AUTO_DOWNLOAD_AWQ, list_model_folders, model_choices, resolve_model_choice
from .widgets import (
    CATEGORY,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    ENGINE_TYPE,
    MAX_MAX_NEW_TOKENS,
    MAX_TEMPERATURE,
    MIN_MAX_NEW_TOKENS,
    TEMPERATURE_STEP,
    TIP_DYNAMIC_TOKEN,
    TIP_ENGINE_SEED,
    TIP_WEIGHTS_RELEASE,
    seed_widget,
)

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "cpu", "mps")
QUANTIZE_TIP = (
    "Quantize the language model's weights as they load from a bf16 folder (weight-only, one scale per 128 "
    "weights). Peak GPU memory of a 30 s edit (H200): none (bf16) 9.0 GiB, int8 6.4 GiB, int4 4.3 GiB; with "
    "int8 / int4 the front end's encoders (1.1 GiB) also wait in host memory between clips. Quality: int8 is "
    "close to bf16; int4 costs more (StepFun's calibrated AWQ-4bit folder is the better 4-bit choice). Speed "
    "(H200): int4 decodes one clip ~15% faster than bf16, int8 ~25% slower; batches of 8-16 run ~35-45% "
    "slower than bf16. Choose it to fit a smaller GPU. CUDA with Triton runs fused kernels (int4: PyTorch's "
    "own int4 matmul for one projection, Ampere+); CPU / MPS dequantize per call (exact, slower). Ignored for "
    "an already-quantized folder.")

LM_SERVER_TIP = (
    "Empty: the language model runs here. A vLLM server URL (e.g. http://gpu-box:8000): the language model runs "
    "there, shared by many ComfyUI workers, and is not loaded here (the audio tokenizer and decoder still are). "
    "The server must run the pack's logits-processor plugin (docs/remote_lm.md); an absent or wrong server is "
    "an error when the engine loads. Tokens are reproducible per seed on one server, but not the local ones.")


def build_handle(model: str, device: str = "auto", dtype: str = "auto", attention: str = "auto",
                 fast_decode: bool = True, dynamic_token: bool = True, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
                 weights_release: str = WEIGHTS_RELEASE_CURRENT, quantize: str = "none",
                 lm_server: str = "") -> EngineHandle:
    """An engine handle from the Engine node's widget values (``model``: a combo value)."""
    roots = bridge.tts_model_roots()
    editx_dir, download = resolve_model_choice(model, roots) if model is not None else (None, False)
    resolved = bridge.torch_device(device)
    reason = backend_unavailable_reason(attention, resolved) if attention != "auto" else None
    if reason:
        raise ValueError(f"Attention backend {attention!r} is unavailable on {resolved}: {reason}. Choose 'auto'.")
    config = EngineConfig(editx_dir=editx_dir, search_roots=tuple(roots), download=download,
                          device=str(resolved), dtype=dtype, attention=attention, fast_decode=bool(fast_decode),
                          weights_release=weights_release, quantize=quantize or "none",
                          lm_server=(lm_server or "").strip())
    settings = GenerationSettings(sampling=SamplingConfig(temperature=float(temperature)),
                                  dynamic_tokens=bool(dynamic_token), max_new_tokens=int(max_new_tokens))
    return EngineHandle(config, settings, int(seed))


def default_engine_handle() -> EngineHandle:
    """The engine a generating node uses when no Engine node is connected: the first model folder found."""
    folders = list_model_folders(bridge.tts_model_roots())
    return build_handle(folders[0] if folders else None)


class StepAudioEditXEngine:
    DESCRIPTION = (
        "Chooses the Step-Audio-EditX model folder and how it runs. The model (~7 GB language model in bf16 plus "
        "~1 GB of audio tokenizer and decoder) loads on first use and is shared by every node using the same "
        "model/device/dtype/attention/fast_decode; ComfyUI's 'Unload models' frees it."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (ENGINE_TYPE,)
    RETURN_NAMES = ("engine",)
    OUTPUT_TOOLTIPS = ("Connect to the Audio Editor and Clone nodes.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (model_choices(bridge.tts_model_roots()), {"tooltip": (
                "A Step-Audio-EditX folder under models/TTS (with Step-Audio-Tokenizer beside it). "
                f"'{AUTO_DOWNLOAD}' fetches the missing files (~10 GB) from Hugging Face into models/TTS; "
                f"'{AUTO_DOWNLOAD_AWQ}' fetches StepFun's 4-bit model (~2.5 GB, plus the decoder from the bf16 "
                "repo when it lacks one).")}),
            "device": (list(DEVICE_CHOICES), {"default": "auto", "tooltip": (
                "auto: ComfyUI's device (honours --cpu). Needs ~12 GB of GPU memory in bf16/fp16, ~20 GB in fp32.")}),
            "dtype": (list(DTYPE_CHOICES), {"default": "auto", "tooltip": (
                "auto: bf16 on GPUs of compute capability 8.0+, fp16 on older GPUs, fp32 on the CPU. fp32 doubles "
                "the memory and is slower on GPUs.")}),
            "attention": (list(ATTENTION_CHOICES), {"default": "auto", "tooltip": (
                "auto picks the fastest exact backend per part. The language model's sqrt-ALiBi cannot run on "
                "flash_attention_2 (only the decoder can); an unavailable choice is an error, not a silent "
                "fallback.")}),
            "fast_decode": ("BOOLEAN", {"default": True, "label_on": "on", "label_off": "off", "tooltip": (
                "Static KV cache with a compiled / CUDA-graph decode step where the device supports it. "
                "The first call after loading pays a one-time warm-up; later calls generate much faster.")}),
            "dynamic_token": ("BOOLEAN", {"default": True, "label_on": "on", "label_off": "off",
                                          "tooltip": TIP_DYNAMIC_TOKEN + " The Audio Editor has its own toggle."}),
            "max_new_tokens": ("INT", {
                "default": DEFAULT_MAX_NEW_TOKENS, "min": MIN_MAX_NEW_TOKENS, "max": MAX_MAX_NEW_TOKENS,
                "tooltip": "Cap on generated tokens per model call, used only where dynamic_token is off (this node's "
                           "toggle for the Clone, the Audio Editor's own toggle for edits; greyed out when no "
                           "connected node uses it). 41.7 tokens = 1 s of speech; 8192 = 196 s. A run that never "
                           "ends costs time up to this cap."}),
            "temperature": ("FLOAT", {
                "default": DEFAULT_TEMPERATURE, "min": 0.0, "max": MAX_TEMPERATURE, "step": TEMPERATURE_STEP,
                "tooltip": "Sampling temperature (official 0.7). 0 = greedy (deterministic without a seed)."}),
            "seed": seed_widget(TIP_ENGINE_SEED, allow_engine_seed=False),
        }, "optional": {
            # Optional so API-format workflows saved before it existed still validate (they get today's weights).
            "weights_release": (list(WEIGHTS_RELEASES), {"default": WEIGHTS_RELEASE_CURRENT,
                                                         "tooltip": TIP_WEIGHTS_RELEASE}),
            "quantize": (list(QUANTIZE_CHOICES), {"default": "none", "tooltip": QUANTIZE_TIP}),
            "lm_server": ("STRING", {"default": "", "tooltip": LM_SERVER_TIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, device=None):
        """Declares one input because ComfyUI repeats a failed check's message once per declared input; the
        attention backend and the temperature are checked by ``make`` before anything loads."""
        if device is None:
            return True
        if device not in DEVICE_CHOICES:
            return f"Unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}."
        try:
            bridge.torch_device(device)
        except ValueError as exc:
            return str(exc)
        return True

    def make(self, model, device, dtype, attention, fast_decode, dynamic_token, max_new_tokens, temperature, seed,
             weights_release=WEIGHTS_RELEASE_CURRENT, quantize="none", lm_server=""):
        return (build_handle(model, device, dtype, attention, fast_decode, dynamic_token, max_new_tokens,
                             temperature, seed, weights_release, quantize, lm_server),)
