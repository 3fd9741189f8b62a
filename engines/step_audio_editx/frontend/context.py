"""PromptContext: everything the LM prompt and the decoder need from one clip, computed once.

A reference voice or an input clip is encoded once per run, not once per chunk, iteration or batch
row: contexts are cached by a hash of the samples, the sample rate and the front end's settings.

Per clip (the official ``preprocess_prompt_wav``): mono mix, 0.6 peak cap, then
  * 16 kHz, peak-normalised, trimmed -> vq02 + vq06 codes -> interleaved LM ids,
  * 16 kHz untrimmed -> CAM++ speaker embedding [192],
  * 24 kHz untrimmed -> prompt mel [T, 80] for the decoder.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch

from ..constants import OUTPUT_SAMPLE_RATE, TOKENS_PER_GROUP
from .audio import prepare_audio, validate_audio
from .codes import interleave
from .offload import ParkedModules
from .paraformer import Vq02Tokenizer
from .semantic import Vq06Tokenizer
from .speaker import SpeakerEncoder

logger = logging.getLogger(__name__)

CONTEXT_CACHE_SIZE = 64  # clips; a 30 s context holds ~1.5k ids, a [1500, 80] mel and 192 floats

MelFunction = Callable[[torch.Tensor, int], torch.Tensor]  # (wav [N], sample_rate) -> [T, num_mels]


@dataclass(frozen=True)
class PromptContext:
    """One encoded clip. Tensors are float32 on the CPU (the decoder moves them)."""

    audio_ids: tuple[int, ...]  # interleaved LM ids (65536-based), whole 5-token groups
    prompt_mel: torch.Tensor  # [T, num_mels], 24 kHz mel of the capped, untrimmed clip
    speaker_embedding: torch.Tensor  # [spk_embed_dim]
    duration_s: float  # of the input clip

    @property
    def n_groups(self) -> int:
        return len(self.audio_ids) // TOKENS_PER_GROUP


def clip_digest(waveform: torch.Tensor, sample_rate: int) -> str:
    """Content hash of a clip (samples and rate), the cache key of its context."""
    data = waveform.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    h = hashlib.sha256(data)
    h.update(f"|{int(sample_rate)}|{tuple(waveform.shape)}".encode())
    return h.hexdigest()


class FrontEnd:
    """vq02 + vq06 tokenizers, CAM++ and the prompt mel behind one batched, cached call."""

    def __init__(self, vq02: Vq02Tokenizer, vq06: Vq06Tokenizer, speaker: SpeakerEncoder, mel: MelFunction,
                 device: torch.device | str = "cpu", cache_size: int = CONTEXT_CACHE_SIZE, offload: bool = False):
        """``offload``: keep the vq02 / vq06 encoders in host memory except while they run (``offload``)."""
        self.vq02, self.vq06, self.speaker, self.mel = vq02, vq06, speaker, mel
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, PromptContext] = OrderedDict()
        self._parked = ParkedModules([vq02.encoder, vq06.model]) if offload else None

    @property
    def offloaded(self) -> bool:
        return self._parked is not None

    def resident(self) -> ContextManager[None]:
        """The encoders on the front end's device for the block (a no-op unless offloaded); transcription
        shares vq02's encoder, so it runs inside this too."""
        return self._parked.resident(self.device) if self._parked is not None else nullcontext()

    def clear_cache(self) -> None:
        self._cache.clear()

    def modules(self) -> dict[str, torch.nn.Module]:
        """Torch modules holding weights (CAM++ runs in onnxruntime on the CPU and holds none)."""
        return {"vq02_encoder": self.vq02.encoder, "vq06_tokenizer": self.vq06.model}

    def to(self, device: torch.device | str) -> FrontEnd:
        if self._parked is None:
            self.vq02.to(device)
            self.vq06.to(device)
        else:  # the encoders stay parked; only vq02's codebook lives on the device
            self.vq02.centroids = self.vq02.centroids.to(device)
        self.device = torch.device(device)
        return self

    def encode(self, clips: Sequence[tuple[torch.Tensor, int]], user_input: bool | Sequence[bool] = True
               ) -> list[PromptContext]:
        """Contexts for ``(waveform [T] or [C, T], sample_rate)`` clips; new clips share one batched pass.

        ``user_input``: per clip (or for all), whether the user-input duration limits apply; False for the
        pack's own output fed back (edit passes, cloned chunks), which may be any length.
        Raises ``AudioInputError`` (a ValueError) naming the clip for bad input.
        """
        flags = [user_input] * len(clips) if isinstance(user_input, bool) else [bool(f) for f in user_input]
        keys = [clip_digest(w, sr) for w, sr in clips]
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache and key not in todo:
                todo[key] = i
            elif flags[i] and key in self._cache:  # cached as fed-back audio: user input still meets the limits
                self._validate(i, len(clips), *clips[i])
        if todo:
            fresh = self._encode([clips[i] for i in todo.values()], [flags[i] for i in todo.values()])
            for key, context in zip(todo, fresh):
                self._cache[key] = context
        out = []
        for key in keys:
            self._cache.move_to_end(key)
            out.append(self._cache[key])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    @staticmethod
    def _validate(n: int, count: int, wav: torch.Tensor, sample_rate: int) -> None:
        try:
            validate_audio(wav, sample_rate)
        except ValueError as exc:
            raise type(exc)(f"clip {n + 1} of {count}: {exc}" if count > 1 else str(exc)) from exc

    @torch.inference_mode()
    def _encode(self, clips: Sequence[tuple[torch.Tensor, int]], user_input: Sequence[bool]) -> list[PromptContext]:
        prepared = []
        for n, ((wav, sr), checked) in enumerate(zip(clips, user_input)):
            try:
                prepared.append(prepare_audio(wav, sr, device=self.device, user_input=checked))
            except ValueError as exc:
                if len(clips) > 1:
                    raise type(exc)(f"clip {n + 1} of {len(clips)}: {exc}") from exc
                raise
        tokenizer_wavs = [p.tokenizer_wav for p in prepared]
        with self.resident():
            vq02 = self.vq02.encode(tokenizer_wavs)
            vq06 = self.vq06.encode(tokenizer_wavs)
        speaker = self.speaker.embed([p.wav16k for p in prepared])
        contexts = []
        for p, c02, c06, emb in zip(prepared, vq02, vq06, speaker):
            ids = interleave(c02.tolist(), c06.tolist())
            mel = self.mel(p.wav24k, OUTPUT_SAMPLE_RATE).detach().to("cpu", torch.float32)
            contexts.append(PromptContext(tuple(ids), mel, emb.detach().to("cpu", torch.float32),
                                          p.wav.shape[-1] / p.sample_rate))
        return contexts
