"""Checks of edit and clone requests that need no model: run before anything loads or downloads.

One rule for transcripts (stated in the README): every operation that puts the clip's words into the
prompt needs them: cloning (the reference clip's transcript) and every edit except denoise and vad
(whose instructions carry no text). A blank transcript (empty or whitespace only) counts as missing.
``require_transcript`` is the one place that rule is enforced, so a caller that can transcribe a clip
instead (speech recognition) replaces it in one spot.
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


class MissingTranscriptError(ValueError):
    """An operation needs the clip's transcript and none (or a blank one) was given."""


def needs_transcript(edit_type: str) -> bool:
    """Whether an edit type reads the input's transcript (every type but denoise and vad)."""
    return edit_type.strip().lower() not in TRANSCRIPT_FREE_EDITS


def require_transcript(text: Optional[str], what: str, how: str = "") -> str:
    """``text`` stripped; MissingTranscriptError naming ``what`` needs it (and ``how`` to give it) when blank."""
    if text is None or not str(text).strip():
        raise MissingTranscriptError(f"{what} needs the transcript of the clip (what it says, word for word)"
                                     + (f": {how}" if how else "."))
    return str(text).strip()


def check_iterations(value: object) -> int:
    """An edit's pass count as an int in 1..MAX_EDIT_ITERATIONS (strings of digits accepted)."""
    try:
        count = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        count = None
    if count is None or not 1 <= count <= MAX_EDIT_ITERATIONS:
        raise ValueError(f"iterations must be a whole number from 1 to {MAX_EDIT_ITERATIONS}, got {value!r}.")
    return count


def check_edit_request(request, where: str = "", transcript_hint: str = "",
                       weights_release: str = WEIGHTS_RELEASE_CURRENT):
    """The request with canonical edit type / value, an int iteration count and, for paralinguistic edits,
    the tagged text in the spelling of ``weights_release``; ValueError prefixed ``where``.

    The message of a missing transcript ends with ``transcript_hint`` (how this caller's user gives one)."""
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
        if needs_transcript(edit_type):
            require_transcript(request.audio_text, f"the {edit_type} edit", transcript_hint)
    except ValueError as exc:
        raise type(exc)(where + str(exc)) from exc
    return replace(request, edit_type=edit_type, edit_value=value, n_iterations=iterations,
                   new_text=new_text, audio_text=request.audio_text or "")


def check_clone_request(request, where: str = "", transcript_hint: str = ""):
    """The request unchanged; ValueError prefixed ``where`` for a blank text or reference transcript."""
    if not request.target_text or not request.target_text.strip():
        raise ValueError(f"{where}the text to speak is empty.")
    try:
        require_transcript(request.prompt_text, "cloning a voice", transcript_hint)
    except MissingTranscriptError as exc:
        raise MissingTranscriptError(where + str(exc)) from exc
    return request
