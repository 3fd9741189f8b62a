"""Requests, settings and results of the engine: typed, so nodes, CLI and scripts share one shape."""

from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .constants import MAX_CONTEXT_TOKENS, OUTPUT_SAMPLE_RATE


class StopReason(str, enum.Enum):
    """Why generation of one row ended."""

    EOS = "eos"  # the model emitted <|EOT|>: the clip is complete
    CAP = "truncated"  # the new-token cap was reached first: the audio may be cut short
    INTERRUPTED = "interrupted"  # the caller cancelled (ComfyUI's Cancel, Ctrl-C)

    @property
    def truncated(self) -> bool:
        return self is StopReason.CAP


OFFICIAL_TEMPERATURE = 0.7  # both official inference paths
ORIGINAL_TOP_K = 50  # the first official path (transformers generate): its default top-k, dropped since


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen; greedy when temperature is 0 or do_sample is off.

    Defaults follow the current official inference (vLLM ``SamplingParams(temperature=0.7)`` alone: no
    top-k, no repetition guard). The first official path (transformers ``generate``: top-k 50 and a
    repetition-aware processor) is :meth:`original_path`.

    ``constrain_audio`` is not an official setting: it only allows vq02 ids in slots 0-1 and vq06 ids in
    slots 2-4 of each 5-token group, and ``<|EOT|>`` at a group boundary. A free sampler can emit a token
    of the wrong codebook or stop mid-group; the official token2wav then splits the stream out of phase and
    the audio comes out garbled (official issue #66, "mis-phased output"). Every valid output satisfies
    the constraint, so it changes nothing else.
    """

    temperature: float = OFFICIAL_TEMPERATURE
    top_k: int = 0  # 0 = off (current official path); ORIGINAL_TOP_K for the first one
    top_p: float = 1.0
    do_sample: bool = True
    repetition_guard: bool = False  # ban a token that occurs twice in the last 10 (first official path only)
    constrain_audio: bool = True  # vq02/vq06 slots by position; <|EOT|> only at a group boundary (issue #66)

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
            raise ValueError(f"top_k must be a whole number, got {self.top_k!r}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0

    @classmethod
    def original_path(cls, temperature: float = OFFICIAL_TEMPERATURE) -> "SamplingConfig":
        """The first official inference (Nov 2025): top-k 50 plus the repetition guard."""
        return cls(temperature=temperature, top_k=ORIGINAL_TOP_K, repetition_guard=True)


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling plus the new-token cap policy of one engine call."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    dynamic_tokens: bool = True  # cap new tokens from the audio/text instead of max_new_tokens
    max_new_tokens: int = MAX_CONTEXT_TOKENS  # the cap when dynamic_tokens is off (clamped to the context)

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, numbers.Integral):
            raise ValueError(f"max_new_tokens must be a whole number, got {self.max_new_tokens!r}.")
        if self.max_new_tokens < 5:
            raise ValueError(f"max_new_tokens must be at least 5 (one 120 ms group), got {self.max_new_tokens}.")


@dataclass
class Timings:
    """Wall-clock seconds per stage (front end, LM prefill and decode, flow decoder, vocoder)."""

    frontend_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    flow_s: float = 0.0
    vocoder_s: float = 0.0
    total_s: float = 0.0

    @property
    def decoder_s(self) -> float:
        return self.flow_s + self.vocoder_s

    def add(self, other: "Timings") -> None:
        for name in ("frontend_s", "prefill_s", "decode_s", "flow_s", "vocoder_s", "total_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class EmptyGenerationError(RuntimeError):
    """The model ended before producing any audio: there is nothing to save (try another seed)."""


@dataclass
class EditRequest:
    """One edit: the input clip, what it says, and the single-intent edit to apply."""

    audio: torch.Tensor  # [T] or [C, T], float, roughly -1..1
    sample_rate: int
    audio_text: str  # transcript of the input (not needed by denoise / vad)
    edit_type: str  # vocabulary.EDIT_TYPES
    edit_value: Optional[str] = None  # emotion / style / speed value
    new_text: Optional[str] = None  # paralinguistic: the transcript with [Tag]s inserted
    n_iterations: int = 1
    seed: int = 0
    # True when ``audio`` is the pack's own output (a cloned chunk): the user-input duration limits do not
    # apply, and audio the model cannot take returns unchanged with a warning instead of an error.
    intermediate: bool = False


@dataclass
class CloneRequest:
    """Speak ``target_text`` in the voice of ``prompt_audio`` (whose transcript is ``prompt_text``)."""

    prompt_audio: torch.Tensor  # [T] or [C, T]
    prompt_sample_rate: int
    prompt_text: str
    target_text: str
    seed: int = 0


@dataclass
class PassResult:
    """One model call: prompt -> generated audio tokens -> waveform."""

    waveform: torch.Tensor  # [T] float32 on the CPU, OUTPUT_SAMPLE_RATE
    n_prompt_tokens: int
    n_generated_tokens: int  # audio tokens, <|EOT|> excluded
    max_new_tokens: int
    stop_reason: StopReason
    timings: Timings = field(default_factory=Timings)
    tokens: tuple[int, ...] = ()  # the generated LM audio ids (<|EOT|> excluded)


@dataclass
class AudioResult:
    """The outcome of ``clone`` or ``edit`` (``passes`` holds one entry per iteration)."""

    waveform: torch.Tensor  # [T] float32 on the CPU
    sample_rate: int = OUTPUT_SAMPLE_RATE
    passes: list[PassResult] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    warnings: list[str] = field(default_factory=list)  # e.g. an edit pass that could not run on fed-back audio

    @property
    def stop_reason(self) -> StopReason:
        return self.passes[-1].stop_reason if self.passes else StopReason.EOS

    @property
    def truncated(self) -> bool:
        return any(p.stop_reason.truncated for p in self.passes)

    @property
    def n_generated_tokens(self) -> int:
        return sum(p.n_generated_tokens for p in self.passes)

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate

    @property
    def empty(self) -> bool:
        """No audio at all (the model ended at once): not a result to save."""
        return self.waveform.numel() == 0

    def check_not_empty(self, name: str = "the result") -> "AudioResult":
        """Self, or EmptyGenerationError saying what to try (callers must never save an empty file)."""
        if self.empty:
            raise EmptyGenerationError(
                f"{name}: the model ended without producing any audio ({self.n_generated_tokens} tokens, stop: "
                f"{self.stop_reason.value}). Nothing was saved; try another seed or a different temperature.")
        return self


@dataclass(frozen=True)
class Progress:
    """Reported after every generated token of a model call (and once per other stage)."""

    stage: str  # "frontend", "generate", "decode"
    done: int  # generate: tokens produced so far by the slowest unfinished row; else items done
    total: int  # generate: the row's new-token cap; else items in the stage
    call: int = 1  # model call number within the request (iterations, post-processor steps)
    calls: int = 1


# A progress callback may return True to stop generation (unfinished rows end as INTERRUPTED) or raise
# to abort the whole call (ComfyUI's interrupt exception must propagate untouched).
ProgressCallback = Callable[[Progress], Optional[bool]]
