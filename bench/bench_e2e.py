"""End-to-end benchmark of the whole pipeline: the numbers users judge the pack by.

A full-size random-weight model in the official on-disk layout (Step1 dims from the facts doc, flow and
HiFT dims from the official yaml values) is written once to ``--models`` (about 8.5 GB), then loaded
through the same engine the nodes use. Its language model never emits <|EOT|>, so every generation
runs exactly to its cap: token counts are what the benchmark asks for.

Reported (bf16 on GPU):
* model load from local disk, and the one-time warm-up (graph capture / kernel selection);
* a 30 s edit (1,250 input audio tokens, 1,250 generated): wall time, per-stage breakdown (front end,
  prefill, decode, flow, vocoder) and peak VRAM;
* the dynamic-token effect: the same edit with the estimator's cap vs a fixed 8,192 (clamped to the
  context), on this model that never stops by itself;
* batch_edit of 16 clips of 10 s vs 16 sequential edit calls, same run, with both per-stage totals;
* the truncation rate of the clone estimator on a table of real utterance durations.

``--compare-pdl``: the 30 s edit and the batch_edit comparison twice in one process, first with the decode
kernels launched plainly (the path before programmatic dependent launch), then with PDL (``lm/triton_pdl``);
the dynamic / fixed cap cases are skipped. ``--compare-persistent`` does the same for the persistent layer
kernel (``lm/persistent_layer``, 1-16 rows): five launches per layer first, then one.

    python bench/bench_e2e.py --device cuda --models /tmp/e2e_models --json e2e.json --markdown e2e.md
    python bench/bench_e2e.py --tiny            # CPU smoke run (tiny random model)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from comfyui_step_audio_editx.engines.step_audio_editx import (
    AUDIO_TOKENS_PER_SECOND,
    MAX_CONTEXT_TOKENS,
    EditRequest,
    EngineConfig,
    GenerationSettings,
    StepAudioEditX,
    write_random_model,
)

from bench_common import BYTES_PER_GIB, device_description, run_and_report, sync, synthetic_speech
from utterance_table import budget_table, summarize

logger = logging.getLogger("bench_e2e")

INPUT_RATE = 24_000
EDIT_TEXT = "This is the transcript of the clip that the benchmark edits, read at an ordinary pace."


def clip(seconds: float, seed: int) -> tuple[torch.Tensor, int]:
    return synthetic_speech(seconds, INPUT_RATE, seed=seed)[0], INPUT_RATE


def timed_edit(engine: StepAudioEditX, requests: list[EditRequest], settings: GenerationSettings,
               device: torch.device, batched: bool = True) -> tuple[float, list]:
    engine.clear_cache()  # every measured call does all of its work
    sync(device)
    start = time.perf_counter()
    results = engine.batch_edit(requests, settings) if batched else [engine.edit(r, settings) for r in requests]
    sync(device)
    return time.perf_counter() - start, results


# --compare-X: (DecodeOptions fields, label) of the path before, then of the new one
COMPARISONS = {"pdl": ((dict(pdl=False), "PDL off (before)"), (dict(pdl=True), "PDL on")),
               "persistent": ((dict(persistent=False), "five launches per layer (before)"),
                              (dict(persistent=True), "one persistent launch per layer"))}


def use_decode_options(engine: StepAudioEditX, **options) -> None:
    """Rebuild the language model's decode session with these ``DecodeOptions`` fields."""
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.decode_session import DecodeOptions
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.generation import get_decode_session

    session = get_decode_session(engine.modules()["lm"], DecodeOptions(**options))
    logger.info("decode path now %s", session.mode)


def stage_row(name: str, wall_s: float, result) -> dict:
    t = result.timings
    p = result.passes[-1]
    return {"case": name, "wall_s": wall_s, "prompt_tokens": p.n_prompt_tokens, "generated": p.n_generated_tokens,
            "cap": p.max_new_tokens, "frontend_s": t.frontend_s, "prefill_s": t.prefill_s, "decode_s": t.decode_s,
            "flow_s": t.flow_s, "vocoder_s": t.vocoder_s,
            "decode_tok_s": p.n_generated_tokens / t.decode_s if t.decode_s else None}


STAGES = ("frontend_s", "prefill_s", "decode_s", "flow_s", "vocoder_s")


def stage_totals(results) -> dict:
    """Seconds per stage summed over a call's results (a batch's shares add up to its stage time)."""
    return {name: sum(getattr(r.timings, name) for r in results) for name in STAGES}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    models = Path(args.models)
    size = "tiny" if args.tiny else "full"
    report: dict = {"device": device_description(device), "size": size, "cases": []}
    if not (models / "Step-Audio-EditX" / "config.json").is_file():
        start = time.perf_counter()
        write_random_model(models, seed=0, size=size, never_stop=True)
        report["write_model_s"] = time.perf_counter() - start
    engine = StepAudioEditX(EngineConfig(search_roots=(str(models),), device=str(device), dtype=args.dtype))
    sync(device)
    start = time.perf_counter()
    engine.load()
    sync(device)
    report["load_s"] = time.perf_counter() - start

    long_s, short_s = (2.0, 1.0) if args.tiny else (30.0, 10.0)
    gen = 50 if args.tiny else round(long_s * AUDIO_TOKENS_PER_SECOND)
    fixed = GenerationSettings(dynamic_tokens=False, max_new_tokens=gen)
    warm = GenerationSettings(dynamic_tokens=False, max_new_tokens=20 if args.tiny else 100)  # tiny: nothing to compile

    def warm_up() -> float:
        """One-time costs (kernel compilation, graph capture) of both batch sizes used below."""
        start = time.perf_counter()
        for n in (1, args.batch):
            timed_edit(engine, [EditRequest(*clip(2.0, 90 + i), EDIT_TEXT, "emotion", "happy", seed=i)
                                for i in range(n)], warm, device)
        return time.perf_counter() - start

    edit = EditRequest(*clip(long_s, 1), EDIT_TEXT, "emotion", "happy", seed=7)
    batch = [EditRequest(*clip(short_s, 10 + i), EDIT_TEXT, "emotion", "sad", seed=100 + i)
             for i in range(args.batch)]
    compared = [name for name in COMPARISONS if getattr(args, f"compare_{name}")]
    if len(compared) > 1:
        raise SystemExit("--compare-pdl and --compare-persistent are separate runs")
    if compared:
        report["modes"] = {}
        for i, (options, label) in enumerate(COMPARISONS[compared[0]]):
            use_decode_options(engine, **options)
            report.setdefault("warmup_s", warm_up())
            cases = edit_cases(engine, edit, fixed, device, f"{long_s:.0f} s edit, {gen} new tokens")
            report["modes"][label] = {"cases": cases,  # the sequential side once: the new path's (device time)
                                      "batch": batch_comparison(engine, batch, device, short_s, sequential=i > 0)}
        report["cases"] = report["modes"][label]["cases"]
        report["batch"] = report["modes"][label]["batch"]
        report["truncation"] = None
        return report
    report["warmup_s"] = warm_up()
    report["cases"] += edit_cases(engine, edit, fixed, device, f"{long_s:.0f} s edit, {gen} new tokens")

    wall, (result,) = timed_edit(engine, [edit], GenerationSettings(), device)
    report["cases"].append(stage_row(f"{long_s:.0f} s edit, dynamic cap", wall, result))
    wall, (result,) = timed_edit(engine, [edit], GenerationSettings(dynamic_tokens=False,
                                                                    max_new_tokens=args.fixed_cap), device)
    clamped = " (clamped to context)" if result.passes[-1].max_new_tokens < args.fixed_cap else ""
    report["cases"].append(stage_row(f"{long_s:.0f} s edit, fixed cap {args.fixed_cap}{clamped}", wall, result))

    report["batch"] = batch_comparison(engine, batch, device, short_s)

    summary = summarize(budget_table())
    report["truncation"] = {"rows": summary.rows, "truncated": summary.truncated, "rate": summary.truncation_rate,
                            "min_ratio": summary.min_ratio, "median_ratio": summary.median_ratio,
                            "max_ratio": summary.max_ratio}
    return report


def edit_cases(engine: StepAudioEditX, edit: EditRequest, settings: GenerationSettings, device: torch.device,
               name: str) -> list[dict]:
    """The long edit twice: the first call at its length pays per-shape costs (cache growth, kernels)."""
    cases = []
    for label in ("first call at this length", "again"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        wall, (result,) = timed_edit(engine, [edit], settings, device)
        row = stage_row(f"{name}, {label}", wall, result)
        if device.type == "cuda":
            row["peak_vram_gib"] = torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB
        row["tokens"] = result.passes[-1].tokens
        cases.append(row)
    return cases


def batch_comparison(engine: StepAudioEditX, batch: list[EditRequest], device: torch.device, clip_s: float,
                     sequential: bool = True) -> dict:
    """One batch_edit against the same requests as sequential edit calls (same seeds: same tokens); without
    ``sequential`` the batch alone."""
    batched_s, results = timed_edit(engine, batch, GenerationSettings(), device, batched=True)
    found = {"clips": len(batch), "clip_s": clip_s, "batched_s": batched_s,
             "generated_per_clip": [r.passes[0].n_generated_tokens for r in results],
             "tokens": [r.passes[0].tokens for r in results], "batched_stages": stage_totals(results)}
    if sequential:
        sequential_s, one_by_one = timed_edit(engine, batch, GenerationSettings(), device, batched=False)
        found.update(sequential_s=sequential_s, speedup=sequential_s / batched_s,
                     same_tokens_as_sequential=found["tokens"] == [r.passes[0].tokens for r in one_by_one],
                     sequential_stages=stage_totals(one_by_one))
    return found


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"### End to end ({d['name']}, torch {d['torch']}, transformers {d['transformers']}, "
             f"{d['date']}; {report['size']} random-weight model in the official layout)", "",
             f"Model load from local disk: {report['load_s']:.1f} s; one-time warm-up: {report['warmup_s']:.1f} s.", ""]
    if "modes" in report:
        return "\n".join(lines + [part for label, mode in report["modes"].items()
                                  for part in (f"#### {label}", "", mode_markdown(mode))]) + same_tokens(report)
    return "\n".join(lines) + "\n" + mode_markdown(report)


def same_tokens(report: dict) -> str:
    """Whether both launch modes generated the same ids for the same seeds."""
    before, after = report["modes"].values()
    edit = [c["tokens"] for c in before["cases"]] == [c["tokens"] for c in after["cases"]]
    batch = before["batch"]["tokens"] == after["batch"]["tokens"]
    labels = " / ".join(report["modes"])
    return f"\nSame tokens ({labels}): long edit {edit}, batch_edit {batch}.\n"


def mode_markdown(report: dict) -> str:
    """The stage table and the batch comparison of one run (or one launch mode)."""
    lines = ["| case | wall s | prompt tok | generated | front end s | prefill s | decode s | decode tok/s | flow s "
             "| vocoder s | peak VRAM GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report["cases"]:
        vram = f"{c['peak_vram_gib']:.2f}" if "peak_vram_gib" in c else ""
        tok_s = f"{c['decode_tok_s']:.0f}" if c["decode_tok_s"] else ""
        lines.append(f"| {c['case']} | {c['wall_s']:.2f} | {c['prompt_tokens']} | {c['generated']} | "
                     f"{c['frontend_s']:.3f} | {c['prefill_s']:.3f} | {c['decode_s']:.2f} | {tok_s} | "
                     f"{c['flow_s']:.3f} | {c['vocoder_s']:.3f} | {vram} |")
    b = report["batch"]
    versus = (f" vs {b['sequential_s']:.2f} s as {b['clips']} sequential edit calls: **{b['speedup']:.1f}x**"
              if "sequential_s" in b else "")
    lines += ["", f"batch_edit of {b['clips']} clips of {b['clip_s']:.0f} s: {b['batched_s']:.2f} s batched{versus} "
              f"({min(b['generated_per_clip'])}-{max(b['generated_per_clip'])} tokens generated per clip).", "",
              "| batch_edit stage | " + " | ".join(name[:-2] for name in STAGES) + " |",
              "|---|" + "---:|" * len(STAGES)]
    for label, key in ((f"{b['clips']} sequential edit calls, s", "sequential_stages"),
                       ("one batch_edit, s", "batched_stages")):
        if key not in b:
            continue
        lines.append(f"| {label} | " + " | ".join(f"{b[key][name]:.3f}" for name in STAGES) + " |")
    lines.append("")
    t = report.get("truncation")
    if t is None:
        return "\n".join(lines) + "\n"
    lines.append(f"Clone token cap on {t['rows']} real utterances: truncation rate {100 * t['rate']:.1f} % "
                 f"(cap / real need: min {t['min_ratio']:.2f}, median {t['median_ratio']:.2f}, max {t['max_ratio']:.2f}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--models", default="/tmp/step_audio_editx_bench_models",
                        help="where the random-weight model folders are (written on first use)")
    parser.add_argument("--batch", type=int, default=16, help="clips in the batch_edit comparison")
    parser.add_argument("--fixed-cap", type=int, default=MAX_CONTEXT_TOKENS,
                        help="the fixed max_new_tokens the dynamic cap is compared with (the official default)")
    parser.add_argument("--tiny", action="store_true", help="tiny model, short clips: a CPU smoke run")
    parser.add_argument("--compare-pdl", action="store_true",
                        help="the 30 s edit and batch_edit with programmatic dependent launch off, then on")
    parser.add_argument("--compare-persistent", action="store_true",
                        help="the 30 s edit and batch_edit with five launches per layer, then one")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch = min(args.batch, 4)
        if args.models == parser.get_default("models"):
            args.models += "_tiny"
    return run_and_report(run, markdown, args)


if __name__ == "__main__":
    sys.exit(main())
