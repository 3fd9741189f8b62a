"""Step Audio EditX Audio Batch: two AUDIO inputs (each a clip or a batch) and their transcripts -> one batch.

Chain it to batch more clips. The batch is mono at the higher sample rate, shorter clips zero-padded at
the end (the Audio Editor trims that padding again); transcripts come out one line per clip.
"""

from __future__ import annotations

from .audio_io import check_audio, merge_batches
from .edit_inputs import per_clip_lines
from .widgets import CATEGORY, text_widget

TIP_BATCH_TRANSCRIPT = ("Transcript of this input: one line per clip when it is itself a batch. Leave both empty "
                        "for denoise / vad.")


class BatchInputError(ValueError):
    """Transcripts that do not match the clips they describe."""


def batch_transcripts(texts: list[str], sizes: list[int]) -> str:
    """One line per clip; a single clip's multi-line transcript becomes one line."""
    if not any(t.strip() for t in texts):
        return ""
    lines: list[str] = []
    for i, (text, size) in enumerate(zip(texts, sizes), start=1):
        if not text.strip():
            raise BatchInputError(f"transcript_{i} is empty while another transcript is not: give every clip its "
                                  "transcript (or none, for denoise / vad).")
        lines += [" ".join(text.split())] if size == 1 else per_clip_lines(text, size, f"transcript_{i}")
    return "\n".join(lines)


class StepAudioEditXAudioBatch:
    DESCRIPTION = ("Joins two clips (or batches) into one batch for the Audio Editor, with their transcripts one "
                   "line per clip. Chain it to batch more.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "transcripts")
    OUTPUT_TOOLTIPS = ("Mono batch [B, 1, T] at the higher sample rate, zero-padded to the longest clip.",
                       "One line per clip, in batch order.")
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio_1": ("AUDIO", {"tooltip": "First clip or batch."}),
            "transcript_1": text_widget(TIP_BATCH_TRANSCRIPT),
            "audio_2": ("AUDIO", {"tooltip": "Second clip or batch, appended after the first."}),
            "transcript_2": text_widget(TIP_BATCH_TRANSCRIPT),
        }}

    def combine(self, audio_1, transcript_1, audio_2, transcript_2):
        sizes = [check_audio(audio_1, "audio_1")[0].shape[0], check_audio(audio_2, "audio_2")[0].shape[0]]
        return (merge_batches(audio_1, audio_2), batch_transcripts([transcript_1, transcript_2], sizes))
