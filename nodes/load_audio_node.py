"""Step Audio EditX Load Audio + Transcript: a clip from ComfyUI's input folder and the transcript in the
``.txt`` file of the same name beside it (``speech.wav`` + ``speech.txt``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import comfy_bridge as bridge
from .widgets import CATEGORY

TRANSCRIPT_SUFFIX = ".txt"


class TranscriptFileError(ValueError):
    """The audio file has no readable transcript beside it."""


def transcript_path(audio_path: Path) -> Path:
    return audio_path.with_suffix(TRANSCRIPT_SUFFIX)


def read_transcript(audio_path: Path) -> str:
    """The stripped text of the sidecar transcript (UTF-8, a BOM is ignored)."""
    path = transcript_path(audio_path)
    if not path.is_file():
        raise TranscriptFileError(
            f"No transcript for {audio_path.name}: expected {path.name} beside it in the input folder. Write what "
            "the clip says into that file, or use the core Load Audio node and type the transcript."
        )
    return path.read_text(encoding="utf-8-sig").strip()


class StepAudioEditXLoadAudioWithTranscript:
    DESCRIPTION = ("Loads a clip from ComfyUI's input folder together with its transcript, read from the .txt file "
                   "of the same name beside it (upload the audio here; copy the .txt into the input folder).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "transcript")
    OUTPUT_TOOLTIPS = ("The clip at its own sample rate and channels.", "The contents of <name>.txt.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": (bridge.input_audio_files(), {
            "audio_upload": True,
            "tooltip": "An audio file in ComfyUI's input folder with a .txt transcript beside it."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, audio=None):
        if audio is None:
            return True
        path = bridge.input_file_path(audio)
        if not path.is_file():
            return f"Invalid audio file: {audio}"
        if not transcript_path(path).is_file():
            return f"No transcript file {transcript_path(path).name} beside {path.name} in the input folder."
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
