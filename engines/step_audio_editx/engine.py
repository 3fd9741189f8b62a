"""StepAudioEditX: the one engine every caller (nodes, CLI, post-processor, benchmarks) runs the model through.

API CONTRACT DRAFT: signatures are fixed; bodies land with the engine issue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from .types import AudioResult, CloneRequest, EditRequest, GenerationSettings, ProgressCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the model is loaded (a change means a new engine)."""

    editx_dir: Optional[str] = None  # the Step-Audio-EditX folder; None -> search_roots
    tokenizer_dir: Optional[str] = None  # the Step-Audio-Tokenizer folder; None -> beside editx / search_roots
    search_roots: tuple[str, ...] = ()  # e.g. ComfyUI's models/TTS folders
    download: bool = False  # fetch missing files from the hub
    device: str = "auto"
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    attention: str = "auto"  # auto | sdpa | xformers | flex_attention | eager
    fast_decode: bool = True  # static KV cache + compiled / CUDA-graph decode step where available


class StepAudioEditX:
    """Loads the parts once and runs clone / edit / batch_edit."""

    def __init__(self, config: EngineConfig = EngineConfig()):
        self.config = config

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self) -> "StepAudioEditX":
        """Load every part onto the device (idempotent)."""
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules holding weights (for host memory managers such as ComfyUI's)."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "StepAudioEditX":
        """Move every part (offload to the CPU, or back to the GPU)."""
        raise NotImplementedError

    def unload(self) -> None:
        """Drop the weights and caches; the next call loads again."""
        raise NotImplementedError

    # -- work ------------------------------------------------------------------------------------
    def clone(self, request: CloneRequest, settings: GenerationSettings = GenerationSettings(),
              progress: Optional[ProgressCallback] = None) -> AudioResult:
        raise NotImplementedError

    def batch_clone(self, requests: Sequence[CloneRequest], settings: GenerationSettings = GenerationSettings(),
                    progress: Optional[ProgressCallback] = None) -> list[AudioResult]:
        raise NotImplementedError

    def edit(self, request: EditRequest, settings: GenerationSettings = GenerationSettings(),
             progress: Optional[ProgressCallback] = None) -> AudioResult:
        raise NotImplementedError

    def batch_edit(self, requests: Sequence[EditRequest], settings: GenerationSettings = GenerationSettings(),
                   progress: Optional[ProgressCallback] = None) -> list[AudioResult]:
        raise NotImplementedError
