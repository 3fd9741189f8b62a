"""The info STRING the generating nodes output: durations, tokens, stop reasons, model calls, times, warnings."""

from __future__ import annotations

from typing import Protocol, Sequence

from ..engines.step_audio_editx import AudioResult, PassResult, Timings
from .audio_io import Clip


class LongFormLike(Protocol):
    """The fields of the post-processor's LongFormResult that the info reads."""

    waveform: object
    sample_rate: int
    model_calls: int
    chunks: int
    truncated: bool
    passes: list[PassResult]
    timings: Timings


def _cap_advice(dynamic_tokens: bool) -> str:
    if dynamic_tokens:
        return "Turn dynamic_token off and raise max_new_tokens on the Engine node."
    return "Raise max_new_tokens on the Engine node."


def _passes_line(passes: Sequence[PassResult]) -> str:
    tokens = "+".join(str(p.n_generated_tokens) for p in passes)
    caps = ", ".join(str(p.max_new_tokens) for p in passes)
    stops = ", ".join(p.stop_reason.value for p in passes)
    return f"{tokens} tokens (cap {caps}), stop: {stops}"


def _stages_line(t: Timings) -> str:
    return (f"stages: frontend {t.frontend_s:.2f} s, prefill {t.prefill_s:.2f} s, decode {t.decode_s:.2f} s, "
            f"flow {t.flow_s:.2f} s, vocoder {t.vocoder_s:.2f} s")


def _time_line(load_s: float, run_s: float) -> str:
    return f"time: {load_s + run_s:.1f} s (model load/placement {load_s:.1f} s, generation {run_s:.1f} s)"


def edit_info(edit_label: str, clips: Sequence[Clip], results: Sequence[AudioResult], n_iterations: int,
              dynamic_tokens: bool, load_s: float, run_s: float) -> str:
    """Summary of an edit of ``clips`` (results in the same order)."""
    n = len(results)
    plural = "s" if n_iterations > 1 else ""
    lines = [f"Step-Audio-EditX edit: {edit_label}, {n_iterations} iteration{plural}, {n} clip{'s' if n > 1 else ''}"]
    warnings = []
    for i, (clip, result) in enumerate(zip(clips, results), start=1):
        line = f"clip {i}: {clip.duration_s:.2f} s in -> {result.duration_s:.2f} s out, {_passes_line(result.passes)}"
        if clip.trimmed_samples:
            line += f"; trimmed {clip.trimmed_s:.2f} s of trailing batch padding"
        lines.append(line)
        warnings.extend(f"WARNING: clip {i}: {w.removeprefix('WARNING: ')}" for w in result.warnings)
        for k, p in enumerate(result.passes, start=1):
            if p.stop_reason.truncated:
                warnings.append(
                    f"WARNING: clip {i}, iteration {k} reached its {p.max_new_tokens}-token cap before the model's "
                    f"end token: the audio may be cut short. {_cap_advice(dynamic_tokens)}"
                )
    calls = max((len(r.passes) for r in results), default=0)
    lines.append(f"model calls: {calls}" + (f" (each batched over {n} clips)" if n > 1 else ""))
    lines.append(_time_line(load_s, run_s))
    if n == 1:
        lines.append(_stages_line(results[0].timings))
    return "\n".join(lines + warnings)


def clone_info(reference: Clip, result: LongFormLike, dynamic_tokens: bool, load_s: float, run_s: float) -> str:
    """Summary of a (long-form) clone."""
    duration = result.waveform.shape[-1] / result.sample_rate
    tokens = sum(p.n_generated_tokens for p in result.passes)
    stops: dict[str, int] = {}
    for p in result.passes:
        stops[p.stop_reason.value] = stops.get(p.stop_reason.value, 0) + 1
    lines = [
        f"Step-Audio-EditX clone: reference {reference.duration_s:.2f} s -> {duration:.2f} s out",
        f"chunks: {result.chunks}, model calls: {result.model_calls}, {tokens} generated tokens, stop: "
        + ", ".join(f"{reason} x{count}" for reason, count in stops.items()),
        _time_line(load_s, run_s),
        _stages_line(result.timings),
    ]
    if result.truncated:
        capped = sum(p.stop_reason.truncated for p in result.passes)
        lines.append(
            f"WARNING: {capped} of {len(result.passes)} model calls reached their token cap before the model's end "
            f"token: parts of the audio may be cut short. {_cap_advice(dynamic_tokens)}"
        )
    lines.extend(f"WARNING: {w}" for w in getattr(result, "warnings", ()))  # inline edits skipped or cut short
    return "\n".join(lines)
