"""Where the language model runs: the small interface the engine generates through.

Two backends keep the ``generate`` contract (one ``GenerationOutput`` per prompt, the audio rules, seeds,
progress and Cancel): ``LocalLM`` runs Step1 in this process (``generation.generate``), ``RemoteLM``
(``remote/client.py``) sends the prompts to a vLLM server. ``group_by_length`` tells the engine whether
to cut a pass into length groups of at most 16 rows (local batches pad to the longest prompt) or send
every row at once (the server batches continuously).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch

from ..types import ProgressCallback, SamplingConfig
from .generation import GenerationOutput, generate


class LMBackend(Protocol):
    group_by_length: bool

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], sampling: SamplingConfig,
                 seeds: list[int], progress: Optional[ProgressCallback] = None) -> list[GenerationOutput]:
        ...


@dataclass
class LocalLM:
    """Step1 in this process. ``generate_fn`` is ``generation.generate`` (tests may stand in for it)."""

    model: torch.nn.Module
    fast: bool = True
    generate_fn: Callable[..., list[GenerationOutput]] = generate
    group_by_length = True

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], sampling: SamplingConfig,
                 seeds: list[int], progress: Optional[ProgressCallback] = None) -> list[GenerationOutput]:
        return self.generate_fn(self.model, prompts, max_new_tokens, sampling, seeds, progress=progress,
                                fast=self.fast)
