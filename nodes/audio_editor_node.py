"""Step Audio EditX Audio Editor: one edit (emotion, style, speed, paralinguistic, denoise, vad) of a clip
or of a batch of clips."""

from __future__ import annotations

from ..engines.step_audio_editx import EDIT_TYPES, EMOTIONS, MAX_EDIT_ITERATIONS, SPEEDS, STYLES
from . import comfy_bridge as bridge
from .audio_io import split_batch, to_comfy_audio
from .edit_inputs import build_edit_requests, check_edit_widgets, edit_value
from .engine_node import default_engine_handle
from .info import edit_info
from .widgets import (
    CATEGORY,
    ENGINE_TYPE,
    TIP_AUDIO_IN,
    TIP_DYNAMIC_TOKEN,
    TIP_ENGINE_IN,
    TIP_N_ITERATIONS,
    TIP_NODE_SEED,
    TIP_PARALINGUISTIC,
    TIP_TRANSCRIPT,
    seed_widget,
    text_widget,
)


class StepAudioEditXAudioEditor:
    DESCRIPTION = (
        "Edits speech with Step-Audio-EditX: one instruction per run (the model was trained on single edits). "
        "Chain editors for several edits. A batch of clips is edited in one batched model call per iteration."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "info")
    OUTPUT_TOOLTIPS = ("The edited audio, 24 kHz mono (a batch stays a batch, padded to its longest clip).",
                       "Durations, tokens, stop reasons, model calls and time; a WARNING line when a pass was cut.")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": TIP_AUDIO_IN}),
                "transcript": text_widget(TIP_TRANSCRIPT),
                "edit_type": (list(EDIT_TYPES), {"default": "emotion", "tooltip": (
                    "Which edit: emotion, style and speed use the matching list below; paralinguistic inserts the "
                    "sounds tagged in paralinguistic_text; denoise and vad (silence removal) need no transcript.")}),
                "emotion": (list(EMOTIONS), {"default": "happy", "tooltip": "Used when edit_type is emotion "
                                             "('remove' takes emotion away)."}),
                "style": (list(STYLES), {"default": "whisper", "tooltip": "Used when edit_type is style "
                                         "('remove' takes the style away)."}),
                "speed": (list(SPEEDS), {"default": "faster", "tooltip": "Used when edit_type is speed."}),
                "paralinguistic_text": text_widget(TIP_PARALINGUISTIC),
                "n_edit_iterations": ("INT", {"default": 1, "min": 1, "max": MAX_EDIT_ITERATIONS,
                                              "tooltip": TIP_N_ITERATIONS}),
                "dynamic_token": ("BOOLEAN", {"default": True, "label_on": "on", "label_off": "off",
                                              "tooltip": TIP_DYNAMIC_TOKEN}),
                "seed": seed_widget(TIP_NODE_SEED),
            },
            "optional": {"engine": (ENGINE_TYPE, {"tooltip": TIP_ENGINE_IN})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, edit_type=None):
        """One declared input (ComfyUI repeats a message once per declared input). The checks that need
        several widgets (transcript, paralinguistic text) run in ``edit`` before anything loads."""
        if edit_type is None:
            return True
        try:
            check_edit_widgets(None, edit_type, None)
        except ValueError as exc:
            return str(exc)
        return True

    def edit(self, audio, transcript, edit_type, emotion, style, speed, paralinguistic_text, n_edit_iterations,
             dynamic_token, seed, engine=None, unique_id=None):
        handle = engine if engine is not None else default_engine_handle()
        clips = split_batch(audio)
        value = edit_value(edit_type, emotion, style, speed)
        seeds = [handle.request_seed(seed, row) for row in range(len(clips))]
        requests = build_edit_requests(clips, transcript, edit_type, value, paralinguistic_text, n_edit_iterations,
                                       seeds)
        settings = handle.generation_settings(dynamic_token)
        results, load_s, run_s = bridge.run_on_engine(handle, unique_id, lambda eng, progress: (
            eng.batch_edit(requests, settings, progress) if len(requests) > 1
            else [eng.edit(requests[0], settings, progress)]))
        for i, result in enumerate(results):  # an empty clip would reach SaveAudio and fail there, unexplained
            result.check_not_empty(f"clip {i + 1} of {len(results)}" if len(results) > 1 else "the edit")
        label = f"{edit_type} -> {value}" if value else edit_type
        info = edit_info(label, clips, results, n_edit_iterations, settings.dynamic_tokens, load_s, run_s)
        info += "\n" + handle.seed_line(seed, len(clips))
        return (to_comfy_audio([r.waveform for r in results], results[0].sample_rate), info)
