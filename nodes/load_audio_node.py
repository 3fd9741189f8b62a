"""Step Audio EditX Load Audio + Transcript: a clip from ComfyUI's input folder and the transcript in the
``.txt`` file of the same name beside it (``speech.wav`` + ``speech.txt``).

The file widget is declared like core Load Audio's (``audio_upload``), so the frontend gives it the same
upload button; ``web/audio_player.js`` adds the audio player that button needs. The ``.txt`` is optional:
denoise and vad need no transcript, and without one the transcript output is empty.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from . import comfy_bridge as bridge
from .widgets import CATEGORY

logger = logging.getLogger(__name__)

TRANSCRIPT_SUFFIX = ".txt"


def transcript_path(audio_path: Path) -> Path:
    return audio_path.with_suffix(TRANSCRIPT_SUFFIX)


def read_transcript(audio_path: Path) -> str:
    """The stripped text of the sidecar transcript (UTF-8, a BOM is ignored); "" when there is none."""
    path = transcript_path(audio_path)
    if not path.is_file():
        logger.info("Step-Audio-EditX: no transcript %s beside %s; the transcript output is empty",
                    path.name, audio_path.name)
        return ""
    return path.read_text(encoding="utf-8-sig").strip()


class StepAudioEditXLoadAudioWithTranscript:
    DESCRIPTION = ("Loads a clip from ComfyUI's input folder together with its transcript, read from the .txt file "
                   "of the same name beside it (upload the audio here; copy the .txt into the input folder). "
                   "Without a .txt the transcript is empty, which is fine for denoise and vad.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "transcript")
    OUTPUT_TOOLTIPS = ("The clip at its own sample rate and channels.",
                       "The contents of <name>.txt beside the clip; empty when there is no such file.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": (bridge.input_audio_files(), {
            "audio_upload": True,
            "tooltip": "An audio file in ComfyUI's input folder. Its transcript is read from the .txt of the same "
                       "name beside it (optional: only denoise and vad work without one)."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, audio=None):
        if audio is None:
            return True
        path = bridge.input_file_path(audio)
        if not path.is_file():
            return f"Invalid audio file: {audio}"
        return True

    @classmethod
    def IS_CHANGED(cls, audio):
        path = bridge.input_file_path(audio)
        digest = hashlib.sha256(path.read_bytes())
        text = transcript_path(path)
        if text.is_file():
            digest.update(text.read_bytes())
        return digest.hexdigest()

    def load(self, audio):
        path = bridge.input_file_path(audio)
        waveform, sample_rate = bridge.load_audio_file(path)
        return ({"waveform": waveform.unsqueeze(0), "sample_rate": sample_rate}, read_transcript(path))
