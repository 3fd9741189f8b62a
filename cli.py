"""Command line: ``step-audio-editx edit | clone | batch | make-tiny-model``.

The same engine the ComfyUI nodes use; audio files in, 24 kHz WAV files out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

logger = logging.getLogger("comfyui_step_audio_editx.cli")

DEFAULT_MODELS_DIR = os.environ.get("STEP_AUDIO_EDITX_MODELS", "models")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from .engines.step_audio_editx import (
        ATTENTION_CHOICES,
        AWQ_DIRNAME,
        DTYPE_CHOICES,
        QUANTIZE_CHOICES,
        WEIGHTS_RELEASE_CURRENT,
        WEIGHTS_RELEASE_ORIGINAL,
        WEIGHTS_RELEASES,
    )

    g = p.add_argument_group("model")
    g.add_argument("--models-dir", default=DEFAULT_MODELS_DIR,
                   help="folder holding Step-Audio-EditX/ and Step-Audio-Tokenizer/ (default: %(default)s, "
                        "or $STEP_AUDIO_EDITX_MODELS)")
    g.add_argument("--editx-dir", help="the Step-Audio-EditX folder, if not under --models-dir")
    g.add_argument("--tokenizer-dir", help="the Step-Audio-Tokenizer folder, if not under --models-dir")
    g.add_argument("--download", action="store_true",
                   help="download missing model files from the Hugging Face hub (~9.7 GB the first time)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    g.add_argument("--attention", default="auto", choices=ATTENTION_CHOICES)
    g.add_argument("--weights-release", default=WEIGHTS_RELEASE_CURRENT, choices=WEIGHTS_RELEASES,
                   help=f"which official weights the folder holds: {WEIGHTS_RELEASE_CURRENT} (published 2026-01-29, "
                        f"a download today) or {WEIGHTS_RELEASE_ORIGINAL} (the first release); decides how sound tags "
                        "are spelt in prompts ([laugh] vs [Laughter])")
    g.add_argument("--no-fast-decode", dest="fast_decode", action="store_false",
                   help="plain decoding loop (no static cache / CUDA graph)")
    g.add_argument("--awq", action="store_true",
                   help=f"use StepFun's 4-bit {AWQ_DIRNAME}/ under --models-dir (with --download: ~2.5 GB)")
    g.add_argument("--quantize", default="none", choices=QUANTIZE_CHOICES,
                   help="quantize the LM's weights on load from a bf16 folder: int8 (6.4 GiB peak VRAM for a 30 s "
                        "edit on an H200) or int4 (5.0 GiB); bf16 needs 9.1 GiB. Saves memory; decoding is slower "
                        "than bf16 for now")
    s = p.add_argument_group("generation")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    s.add_argument("--top-k", type=int, default=0,
                   help="0 = off, as the current official inference (temperature alone); the first official "
                        "path used 50 with --repetition-guard")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--no-dynamic-tokens", dest="dynamic_tokens", action="store_false",
                   help="use --max-new-tokens instead of a cap sized from the audio / text")
    s.add_argument("--max-new-tokens", type=int, default=8192)
    s.add_argument("--repetition-guard", dest="repetition_guard", action="store_true", default=False,
                   help="ban an id that occurs twice in the last 10 (the first official path; off in the current one)")
    s.add_argument("--no-repetition-guard", dest="repetition_guard", action="store_false",
                   help="the default; kept for scripts written when the guard was on by default")


def _edit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--edit-type", required=True, help="emotion, style, speed, paralinguistic, denoise or vad")
    p.add_argument("--value", help="the emotion / style / speed value (e.g. happy, whisper, faster)")
    p.add_argument("--new-text", help="paralinguistic: the transcript with [laugh]-style tags inserted")
    p.add_argument("--iterations", type=int, default=1, help="edit passes, each on the previous output (1-5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="step-audio-editx", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    edit = sub.add_parser("edit", help="edit one clip (emotion, style, speed, paralinguistic, denoise, vad)")
    edit.add_argument("input", help="audio file to edit (0.5-30 s)")
    text = edit.add_mutually_exclusive_group()
    text.add_argument("--text", help="transcript of the input")
    text.add_argument("--text-file", help="file holding the transcript (default: INPUT with .txt, if present)")
    _edit_options(edit)
    edit.add_argument("--out", "-o", default="edited.wav")
    _add_engine_options(edit)

    clone = sub.add_parser("clone", help="speak a text in the voice of a reference clip (inline tags allowed)")
    clone.add_argument("--prompt-audio", required=True, help="reference clip (0.5-30 s)")
    clone.add_argument("--prompt-text", help="transcript of the reference clip (default: its .txt sidecar)")
    clone.add_argument("--text", required=True, help="text to speak; may hold <laugh>, <emotion:happy>, [pause:500ms]")
    clone.add_argument("--out", "-o", default="cloned.wav")
    _add_engine_options(clone)

    batch = sub.add_parser("batch", help="edit many clips with one batched model call per step (JSONL manifest)")
    batch.add_argument("manifest", help='JSONL lines: {"input": "a.wav", "text": "...", "edit_type": "emotion", '
                                        '"value": "happy", "iterations": 1, "seed": 0, "output": "a_happy.wav"}')
    batch.add_argument("--out-dir", default="edited")
    _add_engine_options(batch)

    tiny = sub.add_parser("make-tiny-model", help="write tiny random-weight model folders in the official layout")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _settings(args):
    from .engines.step_audio_editx import GenerationSettings, SamplingConfig

    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              do_sample=args.temperature > 0, repetition_guard=args.repetition_guard)
    return GenerationSettings(sampling=sampling, dynamic_tokens=args.dynamic_tokens, max_new_tokens=args.max_new_tokens)


def _engine(args):
    from .engines.step_audio_editx import EngineConfig, StepAudioEditX

    editx_dir = args.editx_dir
    if args.awq and editx_dir is None:
        from .engines.step_audio_editx import AWQ_DIRNAME

        editx_dir = str(Path(args.models_dir) / AWQ_DIRNAME)
    config = EngineConfig(editx_dir=editx_dir, tokenizer_dir=args.tokenizer_dir, search_roots=(args.models_dir,),
                          download=args.download, device=args.device, dtype=args.dtype, attention=args.attention,
                          fast_decode=args.fast_decode, weights_release=args.weights_release,
                          quantize=args.quantize)
    return StepAudioEditX(config).load()


def _read_audio(path: str):
    import soundfile as sf
    import torch

    if not Path(path).is_file():
        raise SystemExit(f"Audio file not found: {path}")
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    return torch.from_numpy(data.T.copy()), sr


def _write_audio(path: str | Path, waveform, sample_rate: int) -> None:
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), waveform.detach().cpu().float().numpy(), sample_rate, subtype="PCM_16")


def _sidecar_text(audio_path: str, given: Optional[str], given_file: Optional[str] = None,
                  needed: bool = True) -> str:
    """The transcript: given, from --text-file, or from the clip's .txt sidecar (denoise / vad need none)."""
    if given is not None:
        return given
    path = Path(given_file) if given_file else Path(audio_path).with_suffix(".txt")
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    if not needed:
        return ""
    raise SystemExit(f"No transcript: pass --text, or put it in {path}")


def _needs_transcript(edit_type: str) -> bool:
    from .engines.step_audio_editx import TRANSCRIPT_FREE_EDITS

    return edit_type.strip().lower() not in TRANSCRIPT_FREE_EDITS


class _TokenBar:
    """tqdm bar fed by the engine's progress callback (one bar per model call)."""

    def __init__(self) -> None:
        self.bar = None
        self.call = None

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        if progress.stage != "generate":
            return None
        if self.bar is None or self.call != progress.call:
            if self.bar is not None:
                self.bar.close()
            self.call = progress.call
            label = f"call {progress.call}/{progress.calls}" if progress.calls > 1 else "generate"
            self.bar = tqdm(total=progress.total, desc=label, unit="tok", leave=False)
        self.bar.total = progress.total
        self.bar.update(progress.done - self.bar.n)  # tqdm itself limits how often it redraws
        return None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _with_progress(run):
    """``run(progress_callback)`` with a token progress bar that is closed however the run ends."""
    bar = _TokenBar()
    try:
        return run(bar)
    finally:
        bar.close()


def _report(name: str, result) -> None:
    stop = result.stop_reason.value
    logger.info("%s: %.2f s of audio, %d tokens, stop: %s, %.2f s", name, result.duration_s,
                result.n_generated_tokens, stop, result.timings.total_s)
    if result.truncated:
        logger.warning("%s hit the new-token cap: the audio may be cut short (try --no-dynamic-tokens with a "
                       "larger --max-new-tokens)", name)


def cmd_edit(args) -> int:
    from .engines.step_audio_editx import EditRequest

    audio, sr = _read_audio(args.input)
    text = _sidecar_text(args.input, args.text, args.text_file, _needs_transcript(args.edit_type))
    request = EditRequest(audio=audio, sample_rate=sr, audio_text=text,
                          edit_type=args.edit_type, edit_value=args.value, new_text=args.new_text,
                          n_iterations=args.iterations, seed=args.seed)
    engine = _engine(args)
    result = _with_progress(lambda bar: engine.edit(request, _settings(args), progress=bar))
    _write_audio(args.out, result.waveform, result.sample_rate)
    _report(args.out, result)
    return 0


def cmd_clone(args) -> int:
    from .utils.audio.edit_post_processor import clone_long_form

    audio, sr = _read_audio(args.prompt_audio)
    prompt_text = _sidecar_text(args.prompt_audio, args.prompt_text)
    engine = _engine(args)
    result = _with_progress(lambda bar: clone_long_form(engine, audio, sr, prompt_text, args.text, _settings(args),
                                                        args.seed, bar))
    _write_audio(args.out, result.waveform, result.sample_rate)
    logger.info("%s: %.2f s of audio in %d chunk(s), %d model call(s)%s", args.out,
                result.waveform.shape[-1] / result.sample_rate, result.chunks, result.model_calls,
                " (TRUNCATED: some chunk hit the token cap)" if result.truncated else "")
    return 0


def _read_manifest(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if "input" not in row or "edit_type" not in row:
                raise SystemExit(f"{path}:{n}: each line needs at least \"input\" and \"edit_type\"")
            rows.append(row)
    if not rows:
        raise SystemExit(f"{path} holds no requests")
    return rows


def cmd_batch(args) -> int:
    from .engines.step_audio_editx import EditRequest

    base = Path(args.manifest).parent
    rows = _read_manifest(args.manifest)
    requests, outputs = [], []
    for i, row in enumerate(rows):
        src = str(base / row["input"]) if not Path(row["input"]).is_absolute() else row["input"]
        audio, sr = _read_audio(src)
        requests.append(EditRequest(
            audio=audio, sample_rate=sr,
            audio_text=_sidecar_text(src, row.get("text"), needed=_needs_transcript(row["edit_type"])),
            edit_type=row["edit_type"], edit_value=row.get("value"), new_text=row.get("new_text"),
            n_iterations=int(row.get("iterations", 1)), seed=int(row.get("seed", args.seed))))
        outputs.append(Path(args.out_dir) / row.get("output", f"{i:04d}_{Path(src).stem}_{row['edit_type']}.wav"))
    engine = _engine(args)
    results = _with_progress(lambda bar: engine.batch_edit(requests, _settings(args), progress=bar))
    for out, result in zip(outputs, results):
        _write_audio(out, result.waveform, result.sample_rate)
        _report(str(out), result)
    return 0


def cmd_make_tiny_model(args) -> int:
    from .engines.step_audio_editx import write_tiny_model

    folders = write_tiny_model(Path(args.out_dir), seed=args.seed)
    logger.info("Tiny model written: %s and %s", folders.editx, folders.tokenizer)
    return 0


COMMANDS = {"edit": cmd_edit, "clone": cmd_clone, "batch": cmd_batch, "make-tiny-model": cmd_make_tiny_model}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:  # bad input or missing files: say what to do, no traceback
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("Interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
