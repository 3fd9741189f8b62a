"""Edits of any length, with or without a transcript: the layer between ``StepAudioEditX.batch_edit`` and
the one-model-call-per-iteration batch of clips of at most 30 s.

Per request: a missing transcript (where the edit needs one) is recognised with the Paraformer; a clip
longer than ``MAX_INPUT_SECONDS`` is recognised (for word timestamps), cut between words into pieces
(``segment.plan_pieces``), each piece gets its part of the transcript (``align.split_text`` for a typed
one, the recognised words otherwise) and of a paralinguistic ``new_text``; all pieces of all requests
are edited as ONE batch per iteration, and each clip's pieces are joined with short crossfades, in order.
A piece in which nothing was recognised (silence, noise) is kept as it was.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch

from ..asr import Transcript, postprocess
from ..constants import MAX_INPUT_SECONDS, MAX_LONG_INPUT_SECONDS, OUTPUT_SAMPLE_RATE
from ..frontend.audio import resample, validate_audio
from ..types import AudioResult, CloneRequest, EditRequest, GenerationSettings, PieceInfo, ProgressCallback, Timings
from ..request_checks import needs_transcript
from .align import split_text
from .join import crossfade_join
from .segment import frame_energy, plan_pieces

logger = logging.getLogger(__name__)

Transcribe = Callable[[Sequence[tuple[torch.Tensor, int]]], list[Transcript]]
RunPieces = Callable[[Sequence[EditRequest], GenerationSettings, Optional[ProgressCallback]], list[AudioResult]]


def _needs_text(r: EditRequest) -> bool:
    return needs_transcript(r.edit_type)  # requests arrive checked (canonical edit types)


def _derive(seed: int, k: int) -> int:
    from ..engine import derive_seed  # the engine owns seed derivation

    return derive_seed(seed, "piece", k)


def _piece_texts(words_text: list[str], cuts: list[int], typed: Optional[str], transcript: Transcript,
                 plans) -> list[str]:
    if typed:
        return split_text(typed, words_text, cuts)
    texts = []
    for plan in plans:
        if plan.end_word <= plan.first_word:
            texts.append("")
            continue
        a = transcript.words[plan.first_word].first_token
        b = transcript.words[plan.end_word - 1].last_token
        texts.append(postprocess(list(transcript.pieces[a:b + 1])))
    return texts


def run_edits(requests: Sequence[EditRequest], settings: GenerationSettings, progress: Optional[ProgressCallback],
              transcribe: Transcribe, run_pieces: RunPieces) -> list[AudioResult]:
    """Fill transcripts, cut long clips, edit every piece in one batch per iteration, join (module doc)."""
    monos: list[Optional[torch.Tensor]] = []
    for n, r in enumerate(requests):
        if r.intermediate:  # the pack's own audio fed back: checked (leniently) by the batch itself, never cut
            monos.append(None)
            continue
        try:
            monos.append(validate_audio(r.audio, r.sample_rate, max_seconds=MAX_LONG_INPUT_SECONDS))
        except ValueError as exc:
            where = f"edit request {n + 1} of {len(requests)}: " if len(requests) > 1 else ""
            raise type(exc)(where + str(exc)) from exc
    long = [m is not None and m.shape[-1] / r.sample_rate > MAX_INPUT_SECONDS for m, r in zip(monos, requests)]
    typed = [(r.audio_text or "").strip() for r in requests]
    todo = [i for i, r in enumerate(requests)
            if long[i] or (not typed[i] and _needs_text(r) and monos[i] is not None)]
    transcripts: dict[int, Transcript] = {}
    if todo:
        for i, t in zip(todo, transcribe([(monos[i], requests[i].sample_rate) for i in todo])):
            transcripts[i] = t
            if not typed[i] and _needs_text(requests[i]):
                logger.info("Transcript recognised for clip %d (%.1f s): %s", i + 1, t.duration, t.text)
    rows: list[EditRequest] = []
    layout: list[list[tuple[int, PieceInfo]]] = []  # per request: (row or -1 to keep, piece)
    kept_audio: dict[tuple[int, int], torch.Tensor] = {}
    for i, r in enumerate(requests):
        text = typed[i] or (transcripts[i].text if i in transcripts else "")
        if _needs_text(r) and not text and not r.intermediate:
            raise ValueError(f"clip {i + 1}: no speech was recognised, so there is no transcript to edit with. "
                             "Type what the clip says in the transcript input.")
        if not long[i]:
            seconds = (monos[i] if monos[i] is not None else torch.as_tensor(r.audio)).shape[-1] / r.sample_rate
            layout.append([(len(rows), PieceInfo(0.0, seconds, text))])
            rows.append(replace(r, audio_text=text))
            continue
        t = transcripts[i]
        sr = r.sample_rate
        plans = plan_pieces(t.words, monos[i].shape[-1] / sr, frame_energy(monos[i], sr))
        cuts = [p.first_word for p in plans[1:]]
        words_text = [w.text for w in t.words]
        texts = _piece_texts(words_text, cuts, typed[i] or None, t, plans)
        new_texts = split_text(r.new_text, words_text, cuts) if r.new_text else [None] * len(plans)
        entry = []
        for k, (plan, piece_text, new_text) in enumerate(zip(plans, texts, new_texts)):
            audio = monos[i][int(round(plan.start * sr)):int(round(plan.end * sr))]
            if _needs_text(r) and (not piece_text or plan.end_word <= plan.first_word):
                kept_audio[(i, k)] = resample(audio, sr, OUTPUT_SAMPLE_RATE) if sr != OUTPUT_SAMPLE_RATE else audio
                entry.append((-1, PieceInfo(plan.start, plan.end, piece_text, edited=False)))
                continue
            entry.append((len(rows), PieceInfo(plan.start, plan.end, piece_text)))
            piece_new = (new_text or piece_text) if r.new_text else None  # a piece without tags: its words
            rows.append(replace(r, audio=audio, audio_text=piece_text, new_text=piece_new, seed=_derive(r.seed, k)))
        layout.append(entry)
        logger.info("Clip %d (%.1f s) cut into %d pieces at %s s", i + 1, monos[i].shape[-1] / sr, len(plans),
                    ", ".join(f"{p.start:.2f}" for p in plans[1:]))
    results = run_pieces(rows, settings, progress) if rows else []
    out = []
    for i, (r, entry) in enumerate(zip(requests, layout)):
        text = typed[i] or (transcripts[i].text if i in transcripts else "")
        shown = text if (_needs_text(r) or typed[i]) else None
        transcribed = not typed[i] and i in transcripts and _needs_text(r)
        if not long[i]:
            res = results[entry[0][0]]
            out.append(replace(res, transcript=shown, transcribed=transcribed))
            continue
        waves, passes, timings, notes = [], [], Timings(), []
        for k, (row, info) in enumerate(entry):
            if row < 0:
                waves.append(kept_audio[(i, k)])
                continue
            res = results[row]
            waves.append(res.waveform)
            passes.extend(res.passes)
            timings.add(res.timings)
            notes += [f"piece {k + 1}: {w}" for w in res.warnings]
        out.append(AudioResult(crossfade_join(waves, OUTPUT_SAMPLE_RATE), OUTPUT_SAMPLE_RATE, passes, timings,
                               warnings=notes, transcript=shown, transcribed=transcribed, pieces=tuple(info for _, info in entry)))
    return out


def fill_clone_texts(requests: Sequence[CloneRequest], transcribe: Transcribe) -> list[CloneRequest]:
    """Clone requests whose reference transcript is empty get the recognised one (a typed one always wins)."""
    todo = [i for i, r in enumerate(requests) if not (r.prompt_text or "").strip()]
    out = list(requests)
    if todo:
        found = transcribe([(validate_audio(requests[i].prompt_audio, requests[i].prompt_sample_rate),
                             requests[i].prompt_sample_rate) for i in todo])
        for i, t in zip(todo, found):
            if not t.text:
                raise ValueError(f"clone request {i + 1}: no speech was recognised in the reference clip; "
                                 "type what it says in the reference text.")
            logger.info("Reference transcript recognised (%.1f s): %s", t.duration, t.text)
            out[i] = replace(requests[i], prompt_text=t.text)
    return out
