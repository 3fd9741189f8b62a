"""Long-form edit and transcription benchmark: a 5-minute edit end to end with no transcript given
(transcription + cutting into pieces + one batched edit per iteration + join), and the real-time factor
of the Paraformer recogniser alone.

Same model as ``bench_e2e.py``: full-size random weights in the official layout (written once to
``--models``), its language model never stopping, so every piece generates exactly to its dynamic cap.

    python bench/bench_long_form.py --device cuda --models /tmp/e2e_models --json lf.json --markdown lf.md
    python bench/bench_long_form.py --tiny --seconds 40     # CPU smoke run (tiny random model)

A model folder written before the recogniser existed gets random predictor / decoder weights added (write
into a hard-linked copy, ``cp -al``, to leave the original alone).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from comfyui_step_audio_editx.engines.step_audio_editx import (
    EditRequest,
    EngineConfig,
    GenerationSettings,
    StepAudioEditX,
    write_random_model,
)

from comfyui_step_audio_editx.engines.step_audio_editx.asr.random_weights import add_random_asr
from comfyui_step_audio_editx.engines.step_audio_editx.constants import PARAFORMER_SUBDIR
from comfyui_step_audio_editx.engines.step_audio_editx.tiny_models import MODEL_SIZES

from bench_common import BYTES_PER_GIB, device_description, run_and_report, sync, synthetic_speech

logger = logging.getLogger("bench_long_form")

INPUT_RATE = 24_000
STAGES = ("frontend_s", "prefill_s", "decode_s", "flow_s", "vocoder_s")
RTF_REPEATS = 3


class _Timer:
    """Wraps an engine method and adds up the seconds spent in it (device synchronised)."""

    def __init__(self, fn, device: torch.device):
        self.fn, self.device, self.seconds, self.calls = fn, device, 0.0, []

    def __call__(self, *args):
        sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        self.calls.append(len(args[0]))
        return out


def transcription_rtf(engine: StepAudioEditX, seconds: float, clips: int, device: torch.device) -> dict:
    """Median wall time of transcribing ``clips`` clips of ``seconds`` s in one call, as a real-time factor."""
    batch = [(synthetic_speech(seconds, INPUT_RATE, seed=50 + i)[0], INPUT_RATE) for i in range(clips)]
    times = []
    for _ in range(RTF_REPEATS):
        sync(device)
        start = time.perf_counter()
        out = engine.transcribe(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    wall = sorted(times)[len(times) // 2]
    return {"clips": clips, "clip_s": seconds, "wall_s": wall, "rtf": wall / (seconds * clips),
            "tokens": sum(len(t.token_ids) for t in out)}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    models = Path(args.models)
    size = "tiny" if args.tiny else "full"
    report: dict = {"device": device_description(device), "size": size, "seconds": args.seconds}
    if not (models / "Step-Audio-EditX" / "config.json").is_file():
        start = time.perf_counter()
        write_random_model(models, seed=0, size=size, never_stop=True)
        report["write_model_s"] = time.perf_counter() - start
    elif add_random_asr(models / "Step-Audio-Tokenizer" / PARAFORMER_SUBDIR, MODEL_SIZES[size].asr):
        logger.info("Added random recogniser weights to the Paraformer of %s", models)
    engine = StepAudioEditX(EngineConfig(search_roots=(str(models),), device=str(device), dtype=args.dtype)).load()
    wav = synthetic_speech(args.seconds, INPUT_RATE, seed=1)[0]

    sync(device)
    start = time.perf_counter()
    engine.transcribe([(wav[: INPUT_RATE], INPUT_RATE)])  # loads the recogniser (shares vq02's encoder)
    sync(device)
    report["transcriber_load_s"] = time.perf_counter() - start
    report["rtf"] = [transcription_rtf(engine, args.seconds, 1, device),
                     transcription_rtf(engine, 30.0, 1, device), transcription_rtf(engine, 30.0, 8, device)]

    settings = GenerationSettings(dynamic_tokens=False, max_new_tokens=args.cap) if args.cap else GenerationSettings()
    request = EditRequest(wav, INPUT_RATE, None, "emotion", "happy", seed=7)
    warm = GenerationSettings(dynamic_tokens=False, max_new_tokens=50)
    start = time.perf_counter()
    engine.edit(request, warm)  # one-time costs at this batch size (kernels, graph capture)
    report["warmup_s"] = time.perf_counter() - start
    engine.clear_cache()

    transcribe, pieces = _Timer(engine.transcribe, device), _Timer(engine._edit_pieces, device)
    engine.transcribe, engine._edit_pieces = transcribe, pieces
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    result = engine.edit(request, settings)
    sync(device)
    wall = time.perf_counter() - start
    t = result.timings
    report["edit"] = {
        "wall_s": wall, "transcribe_s": transcribe.seconds, "pieces_batch_s": pieces.seconds,
        "cut_and_join_s": wall - transcribe.seconds - pieces.seconds, "batches": pieces.calls,
        "pieces": [[round(p.start_s, 2), round(p.end_s, 2)] for p in result.pieces],
        "generated": result.n_generated_tokens, "out_s": result.duration_s,
        "stages": {name: getattr(t, name) for name in STAGES},
        "peak_vram_gib": torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB if device.type == "cuda" else None,
    }
    return report


def markdown(report: dict) -> str:
    d, e = report["device"], report["edit"]
    lengths = [b - a for a, b in e["pieces"]]
    lines = [f"### Long-form edit and transcription ({d['name']}, torch {d['torch']}, {d['date']}; "
             f"{report['size']} random-weight model in the official layout)", "",
             f"A {report['seconds']:.0f} s emotion edit with no transcript: **{e['wall_s']:.2f} s** end to end "
             f"(one-time warm-up before it: {report['warmup_s']:.1f} s).", "",
             "| step | s |", "|---|---:|",
             f"| transcription of the whole clip | {e['transcribe_s']:.2f} |",
             f"| {len(e['pieces'])} pieces ({min(lengths):.1f}-{max(lengths):.1f} s) edited as {len(e['batches'])} "
             f"batch of {e['batches'][0]} | {e['pieces_batch_s']:.2f} |",
             f"| checks, cutting, joining | {e['cut_and_join_s']:.2f} |", "",
             "Inside the batch: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in e["stages"].items())
             + f"; {e['generated']} tokens generated; {e['out_s']:.1f} s of audio out"
             + (f"; peak VRAM {e['peak_vram_gib']:.2f} GiB." if e["peak_vram_gib"] else "."), "",
             f"Recogniser load (predictor + decoder; the encoder is vq02's): {report['transcriber_load_s']:.2f} s.", "",
             "| transcription | wall s | real-time factor | tokens |", "|---|---:|---:|---:|"]
    for r in report["rtf"]:
        lines.append(f"| {r['clips']} x {r['clip_s']:.0f} s | {r['wall_s']:.3f} | {r['rtf']:.5f} | {r['tokens']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--models", default="/tmp/step_audio_editx_bench_models",
                        help="where the random-weight model folders are (written on first use)")
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the edited clip")
    parser.add_argument("--cap", type=int, default=0, help="fixed max_new_tokens per piece (0: the dynamic cap)")
    parser.add_argument("--tiny", action="store_true", help="tiny model: a CPU smoke run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.tiny and args.models == parser.get_default("models"):
        args.models += "_tiny"
    return run_and_report(run, markdown, args)


if __name__ == "__main__":
    sys.exit(main())
