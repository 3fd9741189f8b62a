"""The Audio Editor's widgets -> engine EditRequests (one per batch row), and the checks ComfyUI can run early.

Texts of a batch are written one line per clip. Only the value widget that matches ``edit_type`` is
used (emotion for emotion edits, and so on); every value comes from ``vocabulary`` (the only copy).
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..engines.step_audio_editx import (
    EditRequest,
    check_edit_type,
    check_edit_value,
    check_paralinguistic_text,
    needs_transcript,
)
from .audio_io import Clip


class EditInputError(ValueError):
    """Editor widgets that do not fit together (missing transcript, wrong number of lines, ...)."""


def per_clip_lines(text: str, n_clips: int, widget: str) -> list[str]:
    """``text`` for one clip, or its non-empty lines for a batch (exactly one line per clip)."""
    if n_clips == 1:
        return [text.strip()]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != n_clips:
        raise EditInputError(
            f"The audio batch holds {n_clips} clips but {widget} has {len(lines)} non-empty lines: "
            f"write one line per clip, in batch order."
        )
    return lines


def check_edit_widgets(transcript: Optional[str], edit_type: Optional[str],
                       paralinguistic_text: Optional[str]) -> None:
    """Raise ValueError for widget values that cannot work (None = linked input, checked at run time)."""
    if edit_type is None:
        return
    edit_type = check_edit_type(edit_type)  # an empty transcript is fine: the clip is transcribed
    if edit_type == "paralinguistic" and paralinguistic_text is not None:
        for line in [line for line in paralinguistic_text.splitlines() if line.strip()] or [""]:
            check_paralinguistic_text(line)


def edit_value(edit_type: str, emotion: str, style: str, speed: str) -> Optional[str]:
    """The value widget that belongs to ``edit_type`` (None for edits without a value)."""
    return {"emotion": emotion, "style": style, "speed": speed}.get(edit_type)


def build_edit_requests(clips: Sequence[Clip], transcript: str, edit_type: str, value: Optional[str],
                        paralinguistic_text: str, n_iterations: int, seeds: Sequence[int]) -> list[EditRequest]:
    """One EditRequest per clip (``seeds[i]`` for clip i)."""
    check_edit_widgets(transcript, edit_type, paralinguistic_text)
    edit_type = check_edit_type(edit_type)
    value = check_edit_value(edit_type, value)
    n = len(clips)
    typed = needs_transcript(edit_type) and bool((transcript or "").strip())
    texts: list[Optional[str]] = per_clip_lines(transcript, n, "transcript") if typed else [None] * n
    new_texts: list[Optional[str]] = (
        per_clip_lines(paralinguistic_text, n, "paralinguistic_text") if edit_type == "paralinguistic" else [None] * n
    )
    return [
        EditRequest(audio=clip.waveform, sample_rate=clip.sample_rate, audio_text=text, edit_type=edit_type,
                    edit_value=value, new_text=new_text, n_iterations=int(n_iterations), seed=seed)
        for clip, text, new_text, seed in zip(clips, texts, new_texts, seeds)
    ]
