"""Applying inline edit tags to audio, and long-form cloning, with as few model calls as possible.

The model was trained on single-intent instructions, so one segment's edits run as a chain of calls
(emotion -> style -> speed -> denoise/vad -> all sounds at once). The calls are cut by batching
ACROSS segments instead: every priority step is one ``batch_edit`` over all segments that have an
edit at that step, so N segments with K steps cost K batched calls, not N x K.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch

from ...engines.step_audio_editx import (
    OUTPUT_SAMPLE_RATE,
    AudioInputError,
    AudioResult,
    CloneRequest,
    EditRequest,
    GenerationSettings,
    PassResult,
    ProgressCallback,
    Timings,
    clip_digest,
    derive_seed,
    validate_audio,
)
from ..text.edit_tags import PARALINGUISTIC, EditStep, EditTag, edit_priority, plan_edit_steps, render_paralinguistic_text
from ..text.segments import Pause, TextChunk, segment_text

logger = logging.getLogger(__name__)

CROSSFADE_SECONDS = 0.03  # joins between consecutive chunks: short enough to keep words, long enough to hide clicks
SEGMENT_CACHE_SIZE = 32  # cloned + edited chunks kept per process (about 3 MB each at 30 s)


@dataclass
class AudioSegment:
    """One piece of speech to edit: its audio, clean transcript, tags (positions in ``text``) and seed."""

    waveform: torch.Tensor  # [T] float32
    sample_rate: int
    text: str
    tags: tuple[EditTag, ...] = ()
    seed: int = 0


@dataclass
class PostProcessResult:
    """Edited segments, in input order, and what it cost."""

    waveforms: list[torch.Tensor]
    sample_rate: int = OUTPUT_SAMPLE_RATE
    applied: list[list[str]] = field(default_factory=list)  # per segment: steps in the order applied
    model_calls: int = 0  # batched generation passes (an n-iteration step counts n)
    passes: list[PassResult] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    warnings: list[str] = field(default_factory=list)  # edits skipped, and why

    @property
    def truncated(self) -> bool:
        return any(p.stop_reason.truncated for p in self.passes)


@dataclass
class LongFormResult:
    """A cloned (and tag-edited) long text joined into one waveform."""

    waveform: torch.Tensor  # [T] float32, OUTPUT_SAMPLE_RATE
    sample_rate: int
    model_calls: int
    chunks: int
    truncated: bool
    passes: list[PassResult] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    applied: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def step_label(step: EditStep) -> str:
    if step.kind == PARALINGUISTIC:
        sounds = "+".join(t.value for t in step.tags)
        name = f"paralinguistic:{sounds}"
    else:
        name = step.kind if step.value is None else f"{step.kind}:{step.value}"
    return name if step.iterations == 1 else f"{name}x{step.iterations}"


def _step_key(plan: Sequence[EditStep]) -> list[tuple[int, int]]:
    """(priority, occurrence) per step: equal keys across segments share one batched call."""
    seen: dict[str, int] = {}
    keys = []
    for step in plan:
        k = seen.get(step.kind, 0)
        seen[step.kind] = k + 1
        keys.append((edit_priority(step.kind), k))
    return keys


def _unusable(waveform: torch.Tensor, sample_rate: int) -> Optional[str]:
    """Why a segment's audio cannot be edited at all (empty, silent, not finite), or None. A segment is the
    pack's own output, so the user-input duration limits (0.5-30 s) do not apply to it."""
    try:
        validate_audio(waveform, sample_rate, user_input=False)
    except AudioInputError as exc:
        return str(exc)
    return None


def _edit_request(segment: AudioSegment, waveform: torch.Tensor, step: EditStep, step_index: int) -> EditRequest:
    new_text = render_paralinguistic_text(segment.text, step.tags) if step.kind == PARALINGUISTIC else None
    return EditRequest(
        audio=waveform, sample_rate=OUTPUT_SAMPLE_RATE if step_index else segment.sample_rate,
        audio_text=segment.text, edit_type=step.kind, edit_value=step.value, new_text=new_text,
        n_iterations=step.iterations, seed=derive_seed(segment.seed, "step", step_index), intermediate=True,
    )


class _CallCounter:
    """Numbers the model calls of a whole job (clone batch, edit steps, iterations) for the progress bar."""

    def __init__(self, progress: Optional[ProgressCallback], calls: int):
        self.progress, self.calls, self.done = progress, max(calls, 1), 0

    def start(self, n_calls: int = 1) -> Optional[ProgressCallback]:
        """The callback for the next engine call, which makes ``n_calls`` model calls (its iterations)."""
        base, self.done = self.done, self.done + n_calls
        if self.progress is None:
            return None
        calls, progress = self.calls, self.progress
        return lambda p: progress(replace(p, call=base + p.call, calls=calls))


def apply_edit_tags(
    engine,
    segments: Sequence[AudioSegment],
    settings: GenerationSettings = GenerationSettings(),
    progress: Optional[ProgressCallback] = None,
    batched: bool = True,
    _counter: Optional[_CallCounter] = None,
) -> PostProcessResult:
    """Run each segment's tags as a chain of single-intent edits, one batched call per priority step.

    ``batched=False`` runs the same requests one ``edit`` at a time (same seeds, same results): the
    reference the batched path is tested against.
    """
    plans = [plan_edit_steps(s.tags) for s in segments]
    keys = [_step_key(p) for p in plans]
    steps: dict[tuple[int, int], list[tuple[int, EditStep]]] = {}
    for i, (plan, ks) in enumerate(zip(plans, keys)):
        for step, key in zip(plan, ks):
            steps.setdefault(key, []).append((i, step))
    order = sorted(steps)
    cost = {k: max(step.iterations for _, step in steps[k]) if batched else sum(step.iterations for _, step in steps[k])
            for k in order}
    counter = _counter or _CallCounter(progress, sum(cost.values()))
    current = [s.waveform for s in segments]
    result = PostProcessResult(waveforms=current, applied=[[] for _ in segments])
    for key in order:
        members = []
        for i, step in steps[key]:
            problem = _unusable(current[i], segments[i].sample_rate if not result.applied[i] else OUTPUT_SAMPLE_RATE)
            if problem:
                result.warnings.append(f"segment {i + 1}: {step_label(step)} skipped ({problem})")
                logger.warning("%s", result.warnings[-1])
            else:
                members.append((i, step))
        if not members:
            continue
        requests = [_edit_request(segments[i], current[i], step, len(result.applied[i])) for i, step in members]
        if batched:
            outcomes = engine.batch_edit(requests, settings, progress=counter.start(cost[key]))
        else:
            outcomes = [engine.edit(r, settings, progress=counter.start(r.n_iterations)) for r in requests]
        result.model_calls += cost[key]
        for (i, step), outcome in zip(members, outcomes):
            result.warnings.extend(f"segment {i + 1}: {step_label(step)}: {w.removeprefix('WARNING: ')}"
                                   for w in outcome.warnings)
            if not outcome.passes:  # the engine could not run it on this segment: the audio is unchanged
                continue
            current[i] = outcome.waveform
            result.applied[i].append(step_label(step))
            result.passes.extend(outcome.passes)
            result.timings.add(outcome.timings)
    return result


def crossfade_join(pieces: Sequence[torch.Tensor | float], sample_rate: int,
                   crossfade_s: float = CROSSFADE_SECONDS) -> torch.Tensor:
    """Join waveforms (tensors) and pauses (seconds of silence, floats) into one [T] waveform.

    Consecutive waveforms overlap by ``crossfade_s`` with an equal-power fade. Around a pause the audio
    fades out / in over the same span, so no click remains.
    """
    fade = int(round(crossfade_s * sample_rate))
    parts: list[torch.Tensor] = []
    for k, piece in enumerate(pieces):
        if not isinstance(piece, torch.Tensor):
            parts.append(torch.zeros(int(round(float(piece) * sample_rate))))
            continue
        wav = piece.detach().to("cpu", torch.float32).reshape(-1).clone()
        n = min(fade, wav.shape[0])
        ramp = torch.sin(torch.linspace(0, math.pi / 2, n))
        after_pause = k > 0 and not isinstance(pieces[k - 1], torch.Tensor)
        before_pause = k + 1 < len(pieces) and not isinstance(pieces[k + 1], torch.Tensor)
        if after_pause:
            wav[:n] *= ramp
        if before_pause:
            wav[-n:] *= ramp.flip(0)
        if parts and k > 0 and isinstance(pieces[k - 1], torch.Tensor):
            m = min(n, parts[-1].shape[0])
            t = torch.linspace(0, math.pi / 2, m)
            overlap = parts[-1][-m:] * torch.cos(t) + wav[:m] * torch.sin(t)
            parts[-1] = parts[-1][:-m] if m else parts[-1]
            parts.append(overlap)
            wav = wav[m:]
        parts.append(wav)
    return torch.cat(parts) if parts else torch.zeros(0)


class _SegmentCache:
    """Finished chunks (cloned and edited) by everything that decides them, so edits of a long text
    re-run only the chunks that changed."""

    def __init__(self, size: int = SEGMENT_CACHE_SIZE):
        self.size = size
        self.items: OrderedDict[str, tuple[torch.Tensor, list[str]]] = OrderedDict()

    def get(self, key: str):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: str, waveform: torch.Tensor, applied: list[str]) -> None:
        self.items[key] = (waveform, applied)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()


SEGMENT_CACHE = _SegmentCache()


def _chunk_key(engine, voice: str, prompt_text: str, chunk: TextChunk, settings: GenerationSettings, seed: int) -> str:
    identity = getattr(engine, "config", None)
    return hashlib.sha256(repr((repr(identity), voice, prompt_text, chunk.text, chunk.tags, settings, seed)).encode()).hexdigest()


def plan_clone_text(text: str) -> list:
    """The chunks and pauses of a text to clone; ValueError for bad tags, bad pauses or nothing to speak.

    Needs no model, so callers check a text with it before anything loads."""
    items = segment_text(text)
    if not any(isinstance(it, TextChunk) for it in items):
        raise ValueError("The text has nothing to speak: write some words (tags and pauses alone make no audio).")
    return items


def clone_long_form(
    engine,
    prompt_audio: torch.Tensor,
    prompt_sample_rate: int,
    prompt_text: str,
    text: str,
    settings: GenerationSettings = GenerationSettings(),
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> LongFormResult:
    """Speak a long text with inline tags in the voice of ``prompt_audio``.

    The text is cut at sentence ends into chunks of <= 30 s of speech; the chunks are cloned as ONE
    batch with the same voice prompt, their tags applied as batched edit steps, and the results joined
    with a short crossfade and the text's ``[pause:...]`` silences. Unchanged chunks come from a cache.
    """
    items = plan_clone_text(text)
    chunks = [it for it in items if isinstance(it, TextChunk)]
    voice = clip_digest(prompt_audio, prompt_sample_rate)
    seeds = [derive_seed(seed, "chunk", i) for i in range(len(chunks))]
    keys = [_chunk_key(engine, voice, prompt_text, c, settings, s) for c, s in zip(chunks, seeds)]
    cached = [SEGMENT_CACHE.get(k) for k in keys]
    todo = [i for i, hit in enumerate(cached) if hit is None]

    step_costs: dict[tuple[int, int], int] = {}
    for i in todo:
        plan = plan_edit_steps(chunks[i].tags)
        for step, key in zip(plan, _step_key(plan)):
            step_costs[key] = max(step_costs.get(key, 0), step.iterations)
    counter = _CallCounter(progress, (1 if todo else 0) + sum(step_costs.values()))
    passes: list[PassResult] = []
    timings = Timings()
    model_calls = 0
    warnings: list[str] = []
    finished: dict[int, tuple[torch.Tensor, list[str]]] = {i: hit for i, hit in enumerate(cached) if hit is not None}
    if todo:
        requests = [CloneRequest(prompt_audio=prompt_audio, prompt_sample_rate=prompt_sample_rate,
                                 prompt_text=prompt_text, target_text=chunks[i].text, seed=seeds[i]) for i in todo]
        cloned: list[AudioResult] = engine.batch_clone(requests, settings, progress=counter.start())
        model_calls += 1
        for i, r in zip(todo, cloned):
            r.check_not_empty(f"chunk {i + 1} of {len(chunks)} ({chunks[i].text[:40]!r})")
        for r in cloned:
            passes.extend(r.passes)
            timings.add(r.timings)
        segments = [AudioSegment(r.waveform, r.sample_rate, chunks[i].text, chunks[i].tags, seeds[i])
                    for i, r in zip(todo, cloned)]
        edited = apply_edit_tags(engine, segments, settings, _counter=counter)
        warnings.extend(edited.warnings)
        model_calls += edited.model_calls
        passes.extend(edited.passes)
        timings.add(edited.timings)
        for i, wav, applied in zip(todo, edited.waveforms, edited.applied):
            finished[i] = (wav, applied)
            SEGMENT_CACHE.put(keys[i], wav, applied)
    else:
        logger.info("All %d chunk(s) came from the cache", len(chunks))

    pieces: list[torch.Tensor | float] = []
    k = 0
    for it in items:
        if isinstance(it, Pause):
            pieces.append(it.seconds)
        else:
            pieces.append(finished[k][0])
            k += 1
    waveform = crossfade_join(pieces, OUTPUT_SAMPLE_RATE)
    return LongFormResult(
        waveform=waveform, sample_rate=OUTPUT_SAMPLE_RATE, model_calls=model_calls, chunks=len(chunks),
        truncated=any(p.stop_reason.truncated for p in passes), passes=passes, timings=timings,
        applied=[finished[i][1] for i in range(len(chunks))], warnings=warnings,
    )
