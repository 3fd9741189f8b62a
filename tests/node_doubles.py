"""Stand-ins the node tests share: ComfyUI AUDIO inputs, and a fake engine that follows StepAudioEditX's
contract with arithmetic instead of a model (``conftest`` turns them into the ``tts_root`` / ``fake_engines``
fixtures)."""

from __future__ import annotations

from pathlib import Path

import torch
from comfyui_step_audio_editx.engines.step_audio_editx.constants import OUTPUT_SAMPLE_RATE
from comfyui_step_audio_editx.engines.step_audio_editx.engine import EngineConfig
from comfyui_step_audio_editx.engines.step_audio_editx.types import (
    AudioResult,
    GenerationSettings,
    PassResult,
    Progress,
    StopReason,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "example_workflows"
SAMPLE_WAV = "sample_speech.wav"


def speech(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, int(seconds * rate), generator=g) - 0.5) * 0.5


def audio(*clips: torch.Tensor, rate: int = 16000) -> dict:
    """ComfyUI AUDIO of clips [C, T], zero-padded to the longest."""
    length = max(c.shape[-1] for c in clips)
    batch = torch.zeros(len(clips), clips[0].shape[0], length)
    for i, c in enumerate(clips):
        batch[i, :, : c.shape[-1]] = c
    return {"waveform": batch, "sample_rate": rate}


def editor_inputs(**overrides) -> dict:
    inputs = dict(audio=audio(speech(1.0)), transcript="Hello there.", edit_type="emotion", emotion="sad",
                  style="whisper", speed="faster", paralinguistic_text="", n_edit_iterations=1, dynamic_token=True,
                  seed=3)
    return {**inputs, **overrides}


class FakeEngine:
    """StepAudioEditX's contract with arithmetic instead of a model: the output is ``seconds_out`` long and
    its samples come from the request seed; progress is reported for ``CAP`` tokens per pass."""

    CAP = 4

    def __init__(self, config: EngineConfig = EngineConfig()):
        self.config = config
        self.lm = torch.nn.Linear(4, 4)
        self._loaded = False
        self.loads = 0
        self.calls: list[tuple[str, list, GenerationSettings]] = []

    def load(self):
        self._loaded, self.loads = True, self.loads + 1
        return self

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def device(self) -> torch.device:
        return self.lm.weight.device

    def modules(self):
        return {"lm": self.lm}

    def to(self, device):
        self.lm.to(device)
        return self

    def unload(self):
        self._loaded = False

    def _result(self, seconds: float, seed: int, n_passes: int, progress) -> AudioResult:
        for call in range(1, n_passes + 1):
            for done in range(self.CAP + 1):
                progress(Progress("generate", done, self.CAP, call=call, calls=n_passes))
        wave = torch.rand(int(seconds * OUTPUT_SAMPLE_RATE), generator=torch.Generator().manual_seed(seed))
        passes = [PassResult(wave, 10, self.CAP, self.CAP, StopReason.EOS) for _ in range(n_passes)]
        return AudioResult(wave, passes=passes)

    def edit(self, request, settings=GenerationSettings(), progress=None):
        self.calls.append(("edit", [request], settings))
        return self._result(request.audio.shape[-1] / request.sample_rate, request.seed, request.n_iterations, progress)

    def batch_edit(self, requests, settings=GenerationSettings(), progress=None):
        self.calls.append(("batch_edit", list(requests), settings))
        return [self._result(r.audio.shape[-1] / r.sample_rate, r.seed, r.n_iterations, progress) for r in requests]
