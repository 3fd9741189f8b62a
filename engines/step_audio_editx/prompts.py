"""Chat-layout prompt ids of the current official Step-Audio-EditX code, for clone and every edit.

Layout (the official ``chat_template`` with a system turn, a user turn and the generation prompt)::

    <s><|BOT|> system\\n{SYSTEM}<|EOT|><|BOT|> human\\n{USER}<|EOT|><|BOT|> assistant\\n

* clone: SYSTEM = the clone template (speaker name, prompt transcript, prompt audio tokens),
  USER = the target text;
* edit: SYSTEM = the audio-editing system prompt, USER = ``{instruction}\\n{audio tokens}\\n``.

Audio enters as language-model ids (``65536 + code``, the output of ``frontend.codes.interleave``) and
is placed into the id list directly: only the text around it goes through the tokenizer. The result
equals tokenising the rendered string (``render_*``), because the tokenizer splits special pieces
out before encoding the text spans between them.

Every prompt string of the pack lives in this module. Values are checked against ``vocabulary``;
one instruction per prompt (the model was trained on single-intent edits).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import AUDIO_TOKEN_OFFSET, VQ02_FIRST_ID, VQ06_LAST_ID
from .frontend.codes import audio_token_string
from .vocabulary import (
    ALL_PARALINGUISTIC_SPELLINGS,
    PARALINGUISTIC_NAME_REGEX,
    PARALINGUISTIC_TAGS_BY_RELEASE,
    WEIGHTS_RELEASE_CURRENT,
    VocabularyError,
    canonical_paralinguistic_tag,
    check_edit_type,
    check_edit_value,
    check_weights_release,
    closest,
    paralinguistic_tag_for_release,
    respell_paralinguistic_marks,
)

if TYPE_CHECKING:  # pragma: no cover
    from .text_tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

# --- the official prompt strings (config/prompts.py and tts.py of the official tree) -------------
SYSTEM_PROMPT_EDIT = (
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user instructions "
    "and applying precise adjustments to meet their needs. Your expertise spans a wide range of enhancement "
    "capabilities, including but not limited to:\n"
    "# Emotional Enhancement\n"
    "# Speaking Style Transfer\n"
    "# Non-linguistic Adjustments\n"
    "# Audio Tuning & Editing\n"
    "Note: You will receive instructions in natural language and are expected to accurately interpret and "
    "execute the most suitable audio edits and enhancements.\n"
)

CLONE_SYSTEM_PROMPT_TEMPLATE = (
    "Generate audio with the following timbre, prosody and speaking style\n\n"
    "[speaker_start]\n"
    "speaker name: {speaker}\n"
    "speaker prompt text: \n"
    "{prompt_text}\n"
    "speaker audio tokens: \n"
    "{prompt_wav_tokens}\n"
    "[speaker_end]\n"
)
# Split around the audio tokens so they can be inserted as ids.
_CLONE_HEAD, _CLONE_TAIL = CLONE_SYSTEM_PROMPT_TEMPLATE.split("{prompt_wav_tokens}")

# Clone speaker name: "clone_" + the first 16 hex digits of a SHA-256 over the prompt transcript (UTF-8)
# and the prompt samples. This is the form of the released training code and the original inference
# (tts.py ``generate_clone_voice_id``), i.e. what the model saw in training. One later official commit
# writes the literal "debug" instead; nothing shows the current weights were trained on that, so the
# training-time form is used (pass ``speaker="debug"`` to reproduce that commit).
CLONE_SPEAKER_PREFIX = "clone_"
CLONE_SPEAKER_HEX_DIGITS = 16
CLONE_SPEAKER_EDGE_SAMPLES = 1000  # hashed: the first and last 1000 samples (all when there are <= 2000)

# Instructions. Note the official quirks kept on purpose: speed values are written after "more"
# ("more more faster"), and the paralinguistic sentence has "is :" and two spaces before "The text".
INSTRUCTION_MORE = "Make the following audio more {value}. The text corresponding to the audio is: {audio_text}\n"
INSTRUCTION_MORE_STYLE = (
    "Make the following audio more {value} style. The text corresponding to the audio is: {audio_text}\n"
)
INSTRUCTION_REMOVE_EMOTION = "Remove any emotion in the following audio and the reference text is: {audio_text}\n"
INSTRUCTION_REMOVE_STYLE = (
    "Remove any speaking styles in the following audio and the reference text is: {audio_text}\n"
)
INSTRUCTION_DENOISE = (
    "Remove any noise from the given audio while preserving the voice content clearly. Ensure that the "
    "speech quality remains intact with minimal distortion, and eliminate all noise from the audio.\n"
)
INSTRUCTION_VAD = (
    "Remove any silent portions from the given audio while preserving the voice content clearly. Ensure "
    "that the speech quality remains intact with minimal distortion, and eliminate all silence from the audio.\n"
)
INSTRUCTION_PARALINGUISTIC = (
    "Add some non-verbal sounds to make the audio more natural, the new text is : {new_text}\n"
    "  The text corresponding to the audio is: {audio_text}\n"
)
REMOVE_VALUE = "remove"

# The user turn of an edit: instruction (ends in "\n"), a newline, the audio tokens, a newline.
EDIT_USER_SEPARATOR = "\n"
EDIT_USER_END = "\n"

# --- chat layout ---------------------------------------------------------------------------------
BOS_PIECE = "<s>"
BOT_PIECE = "<|BOT|>"
EOT_PIECE = "<|EOT|>"
ROLE_SYSTEM = "system"
ROLE_USER = "human"
ROLE_ASSISTANT = "assistant"
ROLE_HEADER = " {role}\n"  # what follows <|BOT|>

# Pieces that would break the chat layout if a user text contained them (checked without a tokenizer).
_LAYOUT_PIECES = re.compile(r"<\|[^<>]*\|>|</?s>|<unk>|<audio_\d+>")
_BRACKET_TAG = re.compile(r"\[([^\[\]\n]{1,40})\]")
_ANGLE_PARALINGUISTIC = re.compile(r"<\s*(" + PARALINGUISTIC_NAME_REGEX + r")\s*(?::\s*\d+\s*)?>", re.IGNORECASE)
_TAG_LIKE_NAME = re.compile(r"[A-Za-z]+(?:[ _-][A-Za-z]+)?")
# Bracketed words this similar to an official tag are taken as a misspelt tag; others ("[sic]") are text.
MISSPELT_TAG_CUTOFF = 0.8


class PromptError(ValueError):
    """A prompt input the official layout cannot carry; the message says what to change."""


@dataclass(frozen=True)
class _Special:
    piece: str


@dataclass(frozen=True)
class _Audio:
    ids: tuple[int, ...]


_Part = str | _Special | _Audio


# --- instructions --------------------------------------------------------------------------------
def build_edit_instruction(
    edit_type: str,
    edit_value: str | None = None,
    audio_text: str | None = "",
    new_text: str | None = None,
    weights_release: str = WEIGHTS_RELEASE_CURRENT,
) -> str:
    """The official instruction sentence for one edit (ends in ``"\\n"``).

    ``edit_value``: emotion / style name or speed phrase (checked and canonicalised through
    ``vocabulary``; ignored for denoise, vad and paralinguistic). ``audio_text``: transcript of the
    input audio (stripped, as the official code does). ``new_text``: paralinguistic only, the
    transcript with official ``[Tag]`` marks where sounds go (e.g. from
    ``utils.text.edit_tags.render_paralinguistic_text``). ``weights_release``: which official weights
    read the prompt; tag marks in both texts are written in the spelling those weights learnt.
    """
    edit_type = check_edit_type(edit_type)
    value = check_edit_value(edit_type, edit_value)
    audio_text = _respelled(audio_text.strip(), weights_release) if audio_text else ""
    if not audio_text and edit_type in ("emotion", "style", "speed", "paralinguistic"):
        logger.warning("Empty audio_text for a %s edit: the model expects the transcript of the input audio.", edit_type)

    if edit_type in ("emotion", "speed"):
        if value == REMOVE_VALUE:  # emotion only: vocabulary rejects speed "remove"
            return INSTRUCTION_REMOVE_EMOTION.format(audio_text=audio_text)
        return INSTRUCTION_MORE.format(value=value, audio_text=audio_text)
    if edit_type == "style":
        if value == REMOVE_VALUE:
            return INSTRUCTION_REMOVE_STYLE.format(audio_text=audio_text)
        return INSTRUCTION_MORE_STYLE.format(value=value, audio_text=audio_text)
    if edit_type == "denoise":
        return INSTRUCTION_DENOISE
    if edit_type == "vad":
        return INSTRUCTION_VAD
    # paralinguistic
    new_text = check_paralinguistic_text(new_text, weights_release)
    _check_no_layout_pieces("new_text", new_text)
    return INSTRUCTION_PARALINGUISTIC.format(new_text=new_text, audio_text=audio_text)


def _tag_list(release: str) -> str:
    return " ".join(f"[{t}]" for t in PARALINGUISTIC_TAGS_BY_RELEASE[release])


def _respelled(text: str, release: str) -> str:
    try:
        return respell_paralinguistic_marks(text, release)
    except VocabularyError as exc:
        raise PromptError(str(exc)) from exc


def check_paralinguistic_text(new_text: str | None, weights_release: str = WEIGHTS_RELEASE_CURRENT) -> str:
    """Validate the paralinguistic ``new_text``: at least one official ``[tag]``, no misspelt tags.

    Tag names are matched in any accepted spelling (case, ``_``/``-``, the original ``[Laughter]``
    ``[Breathing]`` ``[Uhm]``) and rewritten as the ``weights_release`` weights learnt them
    (``[Laughter]`` -> ``[laugh]`` for the current weights); bracketed text that is not tag-like
    (``[sic]``, ``[1]``) is kept.
    """
    release = check_weights_release(weights_release)
    if new_text is None or not new_text.strip():
        raise PromptError(
            "A paralinguistic edit needs new_text: the transcript with official [tag] marks where the "
            f"sounds go, e.g. 'That is so funny [laugh] really.'. Tags: {_tag_list(release)}."
        )
    angle = _ANGLE_PARALINGUISTIC.search(new_text)
    if angle:
        raise PromptError(
            f"new_text contains the inline tag {angle.group(0)!r}; the model reads the official transcript form "
            f"[{paralinguistic_tag_for_release(angle.group(1), release)}]. Convert inline tags with "
            "utils.text.edit_tags.render_paralinguistic_text."
        )
    found = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal found
        name = match.group(1).strip()
        if canonical_paralinguistic_tag(name) is not None:
            found += 1
            try:
                return f"[{paralinguistic_tag_for_release(name, release)}]"
            except VocabularyError as exc:
                raise PromptError(f"new_text at character {match.start()}: {exc}") from exc
        if _TAG_LIKE_NAME.fullmatch(name):
            guess = closest(name, ALL_PARALINGUISTIC_SPELLINGS, cutoff=MISSPELT_TAG_CUTOFF)
            if guess is not None:
                try:
                    guess = paralinguistic_tag_for_release(guess, release)
                except VocabularyError:
                    pass
                raise PromptError(
                    f"Unknown paralinguistic tag [{name}] in new_text at character {match.start()}. "
                    f"Did you mean [{guess}]? Valid tags: {_tag_list(release)}."
                )
        return match.group(0)

    fixed = _BRACKET_TAG.sub(fix, new_text)
    if not found:
        raise PromptError(
            f"new_text {new_text!r} has no paralinguistic [tag]; add one where the sound goes. "
            f"Valid tags: {_tag_list(release)}."
        )
    return fixed


def clone_speaker_name(prompt_text: str, prompt_waveform=None) -> str:
    """The official clone speaker name ``clone_<sha256[:16]>`` of a voice prompt.

    Hashed, as the original ``generate_clone_voice_id``: the transcript's UTF-8 bytes, then the float32
    bytes of the waveform as loaded (``[channels, samples]`` flattened channel by channel, not mixed or
    resampled): its first and last 1000 values, or all of them when there are at most 2000.
    Without a waveform only the transcript is hashed (builders that hold audio ids, not samples).
    """
    hasher = hashlib.sha256((prompt_text or "").encode("utf-8"))
    if prompt_waveform is not None:
        if hasattr(prompt_waveform, "detach"):  # torch tensor
            prompt_waveform = prompt_waveform.detach().to("cpu").float().numpy()
        import numpy as np

        flat = np.asarray(prompt_waveform, dtype=np.float32).reshape(-1)
        edge = CLONE_SPEAKER_EDGE_SAMPLES
        if flat.size > 2 * edge:
            flat = np.concatenate([flat[:edge], flat[-edge:]])
        hasher.update(flat.tobytes())
    return CLONE_SPEAKER_PREFIX + hasher.hexdigest()[:CLONE_SPEAKER_HEX_DIGITS]


# --- layout --------------------------------------------------------------------------------------
def _chat(system: list[_Part], user: list[_Part]) -> list[_Part]:
    return [
        _Special(BOS_PIECE), _Special(BOT_PIECE), ROLE_HEADER.format(role=ROLE_SYSTEM), *system, _Special(EOT_PIECE),
        _Special(BOT_PIECE), ROLE_HEADER.format(role=ROLE_USER), *user, _Special(EOT_PIECE),
        _Special(BOT_PIECE), ROLE_HEADER.format(role=ROLE_ASSISTANT),
    ]


def _edit_parts(
    edit_type: str, edit_value: str | None, audio_text: str | None, audio_ids: Sequence[int], new_text: str | None,
    weights_release: str,
) -> list[_Part]:
    _check_no_layout_pieces("audio_text", audio_text or "")
    instruction = build_edit_instruction(edit_type, edit_value, audio_text, new_text, weights_release)
    audio = _Audio(_audio_ids("audio_ids", audio_ids))
    return _chat([SYSTEM_PROMPT_EDIT], [instruction + EDIT_USER_SEPARATOR, audio, EDIT_USER_END])


def _clone_parts(
    prompt_text: str, prompt_audio_ids: Sequence[int], target_text: str, speaker: str | None, weights_release: str
) -> list[_Part]:
    if target_text is None or not target_text.strip():
        raise PromptError("The clone target_text is empty: give the text to speak in the cloned voice.")
    if prompt_text is None or not prompt_text.strip():
        logger.warning("Empty prompt_text for a clone: the model expects the transcript of the voice prompt.")
        prompt_text = prompt_text or ""
    speaker = clone_speaker_name(prompt_text) if speaker is None else speaker
    if not speaker.strip() or "\n" in speaker:
        raise PromptError(f"The clone speaker name {speaker!r} must be one non-empty line (official: clone_<hash>).")
    for name, text in (("prompt_text", prompt_text), ("target_text", target_text), ("speaker", speaker)):
        _check_no_layout_pieces(name, text)
    audio = _Audio(_audio_ids("prompt_audio_ids", prompt_audio_ids))
    prompt_text = _respelled(prompt_text, weights_release)
    target_text = _respelled(target_text, weights_release)
    head = _CLONE_HEAD.format(speaker=speaker, prompt_text=prompt_text)
    return _chat([head, audio, _CLONE_TAIL], [target_text])


def _check_no_layout_pieces(name: str, text: str) -> None:
    hit = _LAYOUT_PIECES.search(text)
    if hit:
        raise PromptError(
            f"{name} contains {hit.group(0)!r} at character {hit.start()}, a control piece of the chat layout; "
            "remove it (audio goes in as ids, not as <audio_N> text)."
        )


def _audio_ids(name: str, ids: Sequence[int]) -> tuple[int, ...]:
    if hasattr(ids, "tolist"):  # numpy array or torch tensor
        ids = ids.tolist()
    out = tuple(int(i) for i in ids)
    if not out:
        raise PromptError(f"{name} is empty: encode the audio first (frontend codes -> codes.interleave).")
    lo, hi = min(out), max(out)
    if lo < VQ02_FIRST_ID or hi > VQ06_LAST_ID:
        raise PromptError(
            f"{name} must be language-model audio ids in {VQ02_FIRST_ID}..{VQ06_LAST_ID} "
            f"({AUDIO_TOKEN_OFFSET} + code, as codes.interleave returns); got values {lo}..{hi}."
        )
    return out


def _render(parts: list[_Part]) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Special):
            out.append(part.piece)
        else:
            out.append(audio_token_string(part.ids))
    return "".join(out)


def _encode(tokenizer: TextTokenizer, parts: list[_Part]) -> list[int]:
    ids: list[int] = []
    text: list[str] = []  # adjacent text parts are encoded together (SentencePiece is not additive)
    for part in parts:
        if isinstance(part, str):
            text.append(part)
            continue
        if text:
            ids.extend(tokenizer.encode("".join(text)))
            text = []
        if isinstance(part, _Special):
            ids.append(tokenizer.piece_to_id(part.piece))
        else:
            ids.extend(part.ids)
    if text:
        ids.extend(tokenizer.encode("".join(text)))
    return ids


# --- public builders -----------------------------------------------------------------------------
def build_edit_prompt(
    tokenizer: TextTokenizer,
    edit_type: str,
    edit_value: str | None,
    audio_text: str | None,
    audio_ids: Sequence[int],
    new_text: str | None = None,
    weights_release: str = WEIGHTS_RELEASE_CURRENT,
) -> list[int]:
    """Prompt ids for one edit of the audio whose LM ids (``65536 + code``) are ``audio_ids``."""
    return _encode(tokenizer, _edit_parts(edit_type, edit_value, audio_text, audio_ids, new_text, weights_release))


def build_clone_prompt(
    tokenizer: TextTokenizer,
    prompt_text: str,
    prompt_audio_ids: Sequence[int],
    target_text: str,
    speaker: str | None = None,
    weights_release: str = WEIGHTS_RELEASE_CURRENT,
) -> list[int]:
    """Prompt ids for speaking ``target_text`` in the voice of the prompt audio (LM ids).

    ``speaker``: the name written into the prompt; give ``clone_speaker_name(prompt_text, samples)``
    (the engine does). None hashes the transcript alone.
    """
    return _encode(tokenizer, _clone_parts(prompt_text, prompt_audio_ids, target_text, speaker, weights_release))


def render_edit_prompt(
    edit_type: str,
    edit_value: str | None,
    audio_text: str | None,
    audio_ids: Sequence[int],
    new_text: str | None = None,
    weights_release: str = WEIGHTS_RELEASE_CURRENT,
) -> str:
    """The chat string :func:`build_edit_prompt` encodes (``<audio_N>`` text for the audio)."""
    return _render(_edit_parts(edit_type, edit_value, audio_text, audio_ids, new_text, weights_release))


def render_clone_prompt(
    prompt_text: str,
    prompt_audio_ids: Sequence[int],
    target_text: str,
    speaker: str | None = None,
    weights_release: str = WEIGHTS_RELEASE_CURRENT,
) -> str:
    """The chat string :func:`build_clone_prompt` encodes."""
    return _render(_clone_parts(prompt_text, prompt_audio_ids, target_text, speaker, weights_release))
