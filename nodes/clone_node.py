"""Step Audio EditX Clone (TTS): speak a text in the voice of a reference clip, with inline edit tags and
long texts split into chunks (both by the edit post-processor)."""

from __future__ import annotations

from ..engines.step_audio_editx import MAX_INPUT_SECONDS, MIN_INPUT_SECONDS
from ..engines.step_audio_editx.request_checks import require_transcript
from ..utils.text.edit_tags import parse_edit_tags
from . import comfy_bridge as bridge
from .audio_io import split_batch, to_comfy_audio
from .engine_node import default_engine_handle
from .info import clone_info
from .widgets import (
    CATEGORY,
    ENGINE_TYPE,
    TIP_ENGINE_IN,
    TIP_NODE_SEED,
    TOKENS_PER_10_SECONDS,
    seed_widget,
    text_widget,
)

EXAMPLE_TEXT = "Hello! <laugh> I can't believe we made it. [pause:500ms] <emotion:happy> This is the best day."


class CloneInputError(ValueError):
    """Clone inputs that cannot work (a batch as reference, an empty text)."""


class StepAudioEditXClone:
    DESCRIPTION = (
        "Zero-shot voice cloning: the text is spoken in the voice of the reference clip. Inline tags such as "
        "<laugh>, <emotion:happy> or [pause:500ms] add edits and pauses; long texts are split into chunks."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "info")
    OUTPUT_TOOLTIPS = ("The spoken text, 24 kHz mono.",
                       "Chunks, model calls, tokens, stop reasons and time; a WARNING line when a call was cut.")
    FUNCTION = "clone"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference_audio": ("AUDIO", {"tooltip": (
                    f"A clean clip of the voice to clone, {MIN_INPUT_SECONDS:g}-{MAX_INPUT_SECONDS:g} s "
                    "(3-10 s works best). One clip, not a batch.")}),
                "reference_text": text_widget("What the reference clip says, word for word."),
                "text": text_widget(
                    "The text to speak. Inline tags: <laugh> (any paralinguistic sound), <emotion:happy>, "
                    "<style:whisper>, <speed:faster>, [pause:500ms]. Each edit tag costs one extra model pass over "
                    f"its chunk (~{TOKENS_PER_10_SECONDS} tokens per 10 s of audio); long texts become several "
                    "chunks of one model call each.", default=EXAMPLE_TEXT),
                "seed": seed_widget(TIP_NODE_SEED),
            },
            "optional": {"engine": (ENGINE_TYPE, {"tooltip": TIP_ENGINE_IN})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, text=None):
        """One declared input (ComfyUI repeats a message once per declared input); reference_text is checked
        by ``clone`` before anything loads."""
        if text is not None and not text.strip():
            return "text is empty: write the text to speak."
        if text is not None:
            try:
                parse_edit_tags(text)  # a misspelt inline tag is named here, before anything runs
            except ValueError as exc:
                return str(exc)
        return True

    def clone(self, reference_audio, reference_text, text, seed, engine=None, unique_id=None):
        clips = split_batch(reference_audio, "reference_audio")
        if len(clips) != 1:
            raise CloneInputError(f"reference_audio holds a batch of {len(clips)} clips; connect a single clip.")
        require_transcript(reference_text, "Cloning a voice", "write what the reference clip says into reference_text")
        from ..utils.audio.edit_post_processor import clone_long_form  # imported on use: it pulls in the text tools

        handle = engine if engine is not None else default_engine_handle()
        ref, settings = clips[0], handle.generation_settings()
        result, load_s, run_s = bridge.run_on_engine(handle, unique_id, lambda eng, progress: clone_long_form(
            eng, ref.waveform, ref.sample_rate, reference_text, text, settings, handle.request_seed(seed), progress))
        info = clone_info(ref, result, settings.dynamic_tokens, load_s, run_s) + "\n" + handle.seed_line(seed)
        return (to_comfy_audio([result.waveform], result.sample_rate), info)
