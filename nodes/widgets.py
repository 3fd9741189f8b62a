"""Widget specs and limits shared by the node classes (one place for every UI number and cost tooltip).

Saved workflows store widget values by position: node classes list their inputs in a frozen order and
only ever append new ones (``tests/test_nodes.py`` holds the expected order).
"""

from __future__ import annotations

from ..engines.step_audio_editx import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_EDIT_ITERATIONS,
    MAX_INPUT_SECONDS,
    MIN_INPUT_SECONDS,
    PARALINGUISTIC_TAGS,
    TOKENS_PER_GROUP,
    WEIGHTS_RELEASE_CURRENT,
    WEIGHTS_RELEASE_ORIGINAL,
    GenerationSettings,
    SamplingConfig,
)

CATEGORY = "audio/Step-Audio-EditX"
ENGINE_TYPE = "STEP_AUDIO_EDITX_ENGINE"  # the socket type of the engine handle

SEED_MAX = 0xFFFFFFFF_FFFFFFFF  # ComfyUI's seed range (the sampler hashes the full 64 bits)
SEED_FROM_ENGINE = -1  # a node seed of -1 means "use the Engine node's seed"

DEFAULT_MAX_NEW_TOKENS = GenerationSettings().max_new_tokens
MIN_MAX_NEW_TOKENS = TOKENS_PER_GROUP  # one 120 ms group (GenerationSettings refuses less)
MAX_MAX_NEW_TOKENS = 32768  # ~13 min of speech; far beyond one model call's useful length
DEFAULT_TEMPERATURE = SamplingConfig().temperature
MAX_TEMPERATURE = 2.0
TEMPERATURE_STEP = 0.05

TOKENS_PER_10_SECONDS = round(10 * AUDIO_TOKENS_PER_SECOND)  # 417 generated tokens per 10 s of speech


def seed_widget(tooltip: str, allow_engine_seed: bool = True) -> tuple:
    """An INT seed with ComfyUI's control_after_generate (one extra value in a UI workflow's widgets_values).

    Engine: default 0, the seed that decides the output. Editor / Clone (``allow_engine_seed``): default -1,
    "use the Engine's seed"; their control widget stays (saved workflows store its value by position) and
    the frontend extension ``web/seed.js`` starts it on "fixed" so that -1 keeps following the Engine.
    """
    low = SEED_FROM_ENGINE if allow_engine_seed else 0  # also the default: -1 on Editor / Clone, 0 on the Engine
    return ("INT", {"default": low, "min": low, "max": SEED_MAX, "control_after_generate": True,
                    "tooltip": tooltip})


def text_widget(tooltip: str, default: str = "") -> tuple:
    return ("STRING", {"multiline": True, "default": default, "tooltip": tooltip})


TIP_DYNAMIC_TOKEN = (
    "On: each model call stops at a cap estimated from the input audio / text length (a slow reading plus a "
    "margin), so a run that never emits its end token costs at most ~1.5x the expected length. Off: the cap is "
    f"the Engine node's max_new_tokens. Each second of speech is {AUDIO_TOKENS_PER_SECOND:.1f} generated tokens."
)
TIP_N_ITERATIONS = (
    f"How many times the edit is applied (1-{MAX_EDIT_ITERATIONS}); each pass feeds the previous output back in. "
    f"Each iteration is one more full model pass (~{TOKENS_PER_10_SECONDS} generated tokens, plus the audio "
    "tokenizer and decoder, for 10 s of audio), so 3 iterations take about 3x as long as one."
)
TIP_AUDIO_IN = (
    f"The clip to edit ({MIN_INPUT_SECONDS:g}-{MAX_INPUT_SECONDS:g} s of speech, any sample rate; stereo is mixed "
    "down). A batch of several clips is edited in one batched model call per iteration; clips of different "
    "lengths in a batch are zero-padded by ComfyUI, and that trailing padding is trimmed before editing."
)
TIP_TRANSCRIPT = (
    "What the input clip says, word for word (needed for every edit except denoise and vad). For a batch, "
    "write one line per clip, in batch order."
)
TIP_PARALINGUISTIC = (
    "Only for edit_type paralinguistic: the transcript with sound tags inserted where they should happen, e.g. "
    "'I can't believe it [laugh] we actually won.' Tags: " + " ".join(f"[{t}]" for t in PARALINGUISTIC_TAGS)
    + ". The original spellings [Laughter] [Breathing] [Uhm] work too; the prompt gets the spelling of the "
    "Engine's weights_release. For a batch, one line per clip."
)
TIP_WEIGHTS_RELEASE = (
    f"Which official Step-Audio-EditX weights the model folder holds. {WEIGHTS_RELEASE_CURRENT}: the release of "
    f"2026-01-29 (what a download gets today; 22 sound tags such as [laugh] [breath] [chuckle]). "
    f"{WEIGHTS_RELEASE_ORIGINAL}: the first release, for folders downloaded before then (10 tags, written "
    "[Laughter] [Breathing] [Uhm]). Sound tags are written into prompts as the chosen weights learnt them."
)
TIP_NODE_SEED = (
    "-1 (default): use the connected Engine node's seed, so one seed on the Engine decides every node's output. "
    "Any other value pins this node to its own seed. The same seed and inputs give the same audio; in a batch, "
    "clip i uses seed + i. Leave control_after_generate on 'fixed' while this is -1."
)
TIP_ENGINE_SEED = (
    "The seed of every Audio Editor / Clone whose own seed is -1 (their default). control_after_generate: "
    "'fixed' repeats the same take, 'randomize' gives a new take on each run."
)
TIP_ENGINE_IN = (
    "Optional Step Audio EditX Engine. Not connected: the first Step-Audio-EditX folder under models/TTS with "
    "default settings (auto device, dtype and attention; dynamic tokens on; temperature 0.7; seed 0)."
)
