"""Checks of edit and clone requests that need no model: run before anything loads or downloads.

One rule for transcripts (stated in the README): cloning and every edit except denoise and vad put the
clip's words into the prompt. A blank transcript (empty or whitespace only) counts as missing, and a
missing one is recognised from the audio (``asr/``, through ``long_form``): it is never an error here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .vocabulary import (
    MAX_EDIT_ITERATIONS,
    TRANSCRIPT_FREE_EDITS,
    WEIGHTS_RELEASE_CURRENT,
    check_edit_type,
    check_edit_value,
)


def needs_transcript(edit_type: str) -> bool:
    """Whether an edit type reads the input's transcript (every type but denoise and vad)."""
    return edit_type.strip().lower() not in TRANSCRIPT_FREE_EDITS


def typed_transcript(text: Optional[str]) -> Optional[str]:
    """``text`` stripped, or None when blank: None means "recognise it from the audio"."""
    return str(text).strip() or None if text is not None else None


def check_iterations(value: object) -> int:
    """An edit's pass count as an int in 1..MAX_EDIT_ITERATIONS (strings of digits accepted)."""
    try:
        count = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        count = None
    if count is None or not 1 <= count <= MAX_EDIT_ITERATIONS:
        raise ValueError(f"iterations must be a whole number from 1 to {MAX_EDIT_ITERATIONS}, got {value!r}.")
    return count


def check_edit_request(request, where: str = "", weights_release: str = WEIGHTS_RELEASE_CURRENT):
    """The request with canonical edit type / value, an int iteration count, for paralinguistic edits the
    tagged text in the spelling of ``weights_release``, and a blank transcript as None (to be recognised);
    ValueError prefixed ``where``."""
    from .prompts import check_paralinguistic_text  # prompts imports the tokenizer stack; keep this module light

    try:
        edit_type = check_edit_type(request.edit_type)
        value = check_edit_value(edit_type, request.edit_value)
        iterations = check_iterations(request.n_iterations)
        new_text = request.new_text
        if edit_type == "paralinguistic":
            if not (new_text or "").strip():
                raise ValueError("the paralinguistic edit needs new_text: the transcript with [laugh]-style tags "
                                 "where the sounds go.")
            new_text = check_paralinguistic_text(new_text, weights_release)  # the weights' own spelling
    except ValueError as exc:
        raise type(exc)(where + str(exc)) from exc
    return replace(request, edit_type=edit_type, edit_value=value, n_iterations=iterations,
                   new_text=new_text, audio_text=typed_transcript(request.audio_text))


def check_clone_request(request, where: str = ""):
    """The request (a blank reference transcript as None, to be recognised); ValueError prefixed ``where``
    for a blank text to speak."""
    if not request.target_text or not request.target_text.strip():
        raise ValueError(f"{where}the text to speak is empty.")
    return replace(request, prompt_text=typed_transcript(request.prompt_text))
