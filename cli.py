"""Command line: ``step-audio-editx edit | clone | batch | make-tiny-model``.

The same engine the ComfyUI nodes use; audio files in, 24 kHz WAV files out. Every check that needs no
model (output paths, arguments, audio, transcripts, inline tags) runs before the model loads or
downloads. Exit codes: 0 done, 1 a result could not be produced or saved (the message says which; the
other results were kept), 2 bad input or set-up (one line says what to do; nothing ran), 130 interrupted.
Parsing imports neither torch nor the engine, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .engines.step_audio_editx.constants import ATTENTION_CHOICES, DTYPE_CHOICES
from .utils.files.outputs import (
    OutputPathError,
    OutputWriteError,
    check_batch_outputs,
    check_output_path,
    write_audio_atomic,
)
from .utils.files.text_files import read_text_file

logger = logging.getLogger("comfyui_step_audio_editx.cli")

DEFAULT_MODELS_DIR = os.environ.get("STEP_AUDIO_EDITX_MODELS", "models")
EXIT_FAILED = 1  # a result could not be produced or saved
EXIT_USAGE = 2  # bad input or set-up, reported before any model work (argparse uses 2 as well)
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class UsageError(ValueError):
    """A bad argument or input file: reported as one line, exit code 2."""


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from .engines.step_audio_editx.constants import AWQ_DIRNAME, OFFLOAD_CHOICES, QUANTIZE_CHOICES
    from .engines.step_audio_editx.vocabulary import WEIGHTS_RELEASE_CURRENT, WEIGHTS_RELEASE_ORIGINAL, WEIGHTS_RELEASES

    p.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                   help="also accepted before the command")
    g = p.add_argument_group("model")
    g.add_argument("--models-dir", default=DEFAULT_MODELS_DIR,
                   help="folder holding Step-Audio-EditX/ and Step-Audio-Tokenizer/ (default: %(default)s, "
                        "or $STEP_AUDIO_EDITX_MODELS)")
    g.add_argument("--editx-dir", help="the Step-Audio-EditX folder, if not under --models-dir")
    g.add_argument("--tokenizer-dir", help="the Step-Audio-Tokenizer folder, if not under --models-dir")
    g.add_argument("--download", action="store_true",
                   help="download missing model files from the Hugging Face hub (~9.7 GB the first time)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
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
                        "edit on an H200) or int4 (4.3 GiB); bf16 needs 9.0 GiB. Saves memory; int4 decodes one clip "
                        "~15% faster than bf16, int8 and batches of 8-16 are slower")
    g.add_argument("--offload-frontend", default="auto", choices=OFFLOAD_CHOICES,
                   help="keep the front end's vq02 / vq06 encoders (1.1 GiB) in host memory except while they encode "
                        "a new clip; auto: on with quantized LM weights on a GPU (bit-identical results)")
    g.add_argument("--lm-server", default="", metavar="URL",
                   help="run the language model on this vLLM server (e.g. http://gpu-box:8000; recipe in "
                        "docs/remote_lm.md) instead of loading it here; the tokenizer and decoder stay local")
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
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    sub = parser.add_subparsers(dest="command", required=True)

    edit = sub.add_parser("edit", help="edit one clip (emotion, style, speed, paralinguistic, denoise, vad)")
    edit.add_argument("input", help="audio file to edit (0.5 s to 20 min; over 30 s it is cut into pieces)")
    text = edit.add_mutually_exclusive_group()
    text.add_argument("--text", help="transcript of the input (default: INPUT's .txt, else recognised and logged)")
    text.add_argument("--text-file", help="file holding the transcript (default: INPUT with .txt, if present)")
    _edit_options(edit)
    edit.add_argument("--out", "-o", default="edited.wav", help=".wav or .flac (default: %(default)s)")
    _add_engine_options(edit)

    clone = sub.add_parser("clone", help="speak a text in the voice of a reference clip (inline tags allowed)")
    clone.add_argument("--prompt-audio", required=True, help="reference clip (0.5-30 s)")
    clone.add_argument("--prompt-text", help="transcript of the reference clip (default: its .txt sidecar, else recognised)")
    clone.add_argument("--text", required=True, help="text to speak; may hold <laugh>, <emotion:happy>, [pause:500ms]")
    clone.add_argument("--out", "-o", default="cloned.wav", help=".wav or .flac (default: %(default)s)")
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


# -- checks that need no model --------------------------------------------------------------------------------

def _settings(args):
    from .engines.step_audio_editx import GenerationSettings, SamplingConfig

    try:
        sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  do_sample=args.temperature > 0, repetition_guard=args.repetition_guard)
        return GenerationSettings(sampling=sampling, dynamic_tokens=args.dynamic_tokens,
                                  max_new_tokens=args.max_new_tokens)
    except ValueError as exc:  # name the flag the user typed
        flag = str(exc).split(" ", 1)[0].replace("_", "-")
        raise UsageError(f"--{flag}: {exc}") from None


def _check_model_options(args) -> None:
    """--device exists here, --attention runs on it, and the model folders given are folders."""
    from .engines.step_audio_editx import backend_unavailable_reason, resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    reason = backend_unavailable_reason(args.attention, device) if args.attention != "auto" else None
    if reason:
        raise UsageError(f"--attention {args.attention} is unavailable on {device}: {reason}. Use --attention auto.")
    for flag, value in (("--models-dir", args.models_dir), ("--editx-dir", args.editx_dir),
                        ("--tokenizer-dir", args.tokenizer_dir)):
        if value and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
            raise UsageError(f"{flag} {value} is a file; give the folder that holds the model files.")


def _read_clip(path: str | Path, label: str = "", long_form: bool = False):
    """The clip as read from disk, after the checks the engine would make (length, silence, NaN); edits
    (``long_form``) take clips past 30 s, which the engine cuts into pieces."""
    from .engines.step_audio_editx import AudioInputError, load_audio, validate_audio
    from .engines.step_audio_editx.constants import MAX_INPUT_SECONDS, MAX_LONG_INPUT_SECONDS

    try:
        if Path(path).is_dir():
            raise AudioInputError(f"{path} is a folder; give an audio file.")
        audio, rate = load_audio(path)
        validate_audio(audio, rate, max_seconds=MAX_LONG_INPUT_SECONDS if long_form else MAX_INPUT_SECONDS)
    except AudioInputError as exc:
        raise UsageError(f"{label}{exc}") from None
    return audio, rate


def _sidecar(audio_path: str | Path) -> Path:
    return Path(audio_path).with_suffix(".txt")


def _transcript(audio_path: str | Path, given: Optional[str], given_file: Optional[str] = None) -> Optional[str]:
    """The transcript: given, read from ``given_file`` (which must exist), or the clip's .txt sidecar; None if none."""
    if given is not None:
        return given
    if given_file is not None:
        return read_text_file(given_file, "--text-file").strip()
    sidecar = _sidecar(audio_path)
    return read_text_file(sidecar, "transcript file").strip() if sidecar.is_file() else None


def _engine(args):
    from .engines.step_audio_editx import EngineConfig, StepAudioEditX

    editx_dir = args.editx_dir
    if args.awq and editx_dir is None:
        from .engines.step_audio_editx import AWQ_DIRNAME

        editx_dir = str(Path(args.models_dir) / AWQ_DIRNAME)
    config = EngineConfig(editx_dir=editx_dir, tokenizer_dir=args.tokenizer_dir, search_roots=(args.models_dir,),
                          download=args.download, device=args.device, dtype=args.dtype, attention=args.attention,
                          fast_decode=args.fast_decode, weights_release=args.weights_release,
                          quantize=args.quantize, offload_frontend=args.offload_frontend,
                          lm_server=args.lm_server)
    return StepAudioEditX(config).load()


def _log_transcript(name: str, result) -> None:
    """Show a recognised transcript (to correct and pass back with --text) and a long clip's pieces."""
    if result.transcribed and result.transcript is not None:
        logger.info("%s: recognised transcript (pass a corrected one with --text): %s", name, result.transcript)
    if result.pieces:
        logger.info("%s: long-form edit in %d pieces (cut between words at %s s), edited as one batch, joined",
                    name, len(result.pieces), ", ".join(f"{p.start_s:.2f}" for p in result.pieces[1:]))
        for k, p in enumerate(result.pieces, start=1):
            logger.info("  piece %d: %.2f-%.2f s%s: %s", k, p.start_s, p.end_s, "" if p.edited else " (kept)", p.text)


# -- console ----------------------------------------------------------------------------------------------------

class _TokenBar:
    """tqdm bar fed by the engine's progress callback (one bar per model call, left on screen when done)."""

    def __init__(self) -> None:
        self.bar = None
        self.call = None

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        if progress.stage != "generate":
            return None
        if self.bar is None or self.call != progress.call:
            self.close(finished=True)
            self.call = progress.call
            label = f"call {progress.call}/{progress.calls}" if progress.calls > 1 else "generate"
            self.bar = tqdm(total=progress.total, desc=label, unit="tok", dynamic_ncols=True)
        self.bar.total = progress.total
        self.bar.update(progress.done - self.bar.n)  # tqdm itself limits how often it redraws
        return None

    def close(self, finished: bool = False) -> None:
        """``finished``: the call ended normally; rows that stopped before the cap end the bar at 100 %
        of the tokens made, not at e.g. 341/355 (the total is the largest cap of the batch)."""
        if self.bar is not None:
            if finished and self.bar.n < (self.bar.total or 0):
                self.bar.total = self.bar.n
            self.bar.refresh()  # the last count, not the last one tqdm happened to draw
            self.bar.close()
            self.bar = None


def _with_progress(run):
    """``run(progress_callback)`` with a token progress bar; log lines print above the bar, never on it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = _TokenBar()
    with logging_redirect_tqdm():
        try:
            result = run(bar)
        except BaseException:
            bar.close()
            raise
        bar.close(finished=True)
        return result


def _cap_hint(args) -> str:
    return ("try --no-dynamic-tokens with a larger --max-new-tokens" if args.dynamic_tokens
            else "raise --max-new-tokens")


def _save(path: Path, result, hint: str, name: Optional[str] = None) -> None:
    """Write one finished result (never an empty one) and log what it holds; one line per file."""
    result.check_not_empty(str(path))
    write_audio_atomic(path, result.waveform, result.sample_rate)
    stop = result.stop_reason.value
    logger.info("%s: %.2f s of audio, %d tokens, stop: %s, %.2f s", name or path, result.duration_s,
                result.n_generated_tokens, stop, result.timings.total_s)
    if result.truncated:
        logger.warning("%s hit the new-token cap: the audio may be cut short (%s)", name or path, hint)


# -- commands ----------------------------------------------------------------------------------------------------

def cmd_edit(args) -> int:
    from .engines.step_audio_editx import EditRequest, check_edit_request

    text_inputs = [args.text_file] if args.text_file else []
    out = check_output_path(args.out, [args.input, *text_inputs], what="-o/--out")
    settings = _settings(args)
    _check_model_options(args)
    audio, rate = _read_clip(args.input, long_form=True)
    text = _transcript(args.input, args.text, args.text_file)  # None or blank: recognised and logged
    request = check_edit_request(EditRequest(audio=audio, sample_rate=rate, audio_text=text,
                                             edit_type=args.edit_type, edit_value=args.value, new_text=args.new_text,
                                             n_iterations=args.iterations, seed=args.seed),
                                 weights_release=args.weights_release)
    engine = _engine(args)
    result = _with_progress(lambda bar: engine.edit(request, settings, progress=bar))
    _log_transcript(str(out), result)
    _save(out, result, _cap_hint(args))
    return 0


def cmd_clone(args) -> int:
    from .engines.step_audio_editx.request_checks import typed_transcript
    from .utils.audio.edit_post_processor import clone_long_form, plan_clone_text

    out = check_output_path(args.out, [args.prompt_audio], what="-o/--out")
    settings = _settings(args)
    _check_model_options(args)
    plan_clone_text(args.text)  # bad tags and pauses are reported now, not after loading
    audio, rate = _read_clip(args.prompt_audio)
    prompt_text = typed_transcript(_transcript(args.prompt_audio, args.prompt_text))  # None: recognised
    engine = _engine(args)
    result = _with_progress(lambda bar: clone_long_form(engine, audio, rate, prompt_text, args.text, settings,
                                                        args.seed, bar))
    write_audio_atomic(out, result.waveform, result.sample_rate)  # clone_long_form raises on an empty chunk
    if result.prompt_transcribed:
        logger.info("Reference transcript recognised (pass a corrected one with --prompt-text): %s", result.prompt_text)
    logger.info("%s: %.2f s of audio in %d chunk(s), %d model call(s)", out,
                result.waveform.shape[-1] / result.sample_rate, result.chunks, result.model_calls)
    if result.truncated:
        logger.warning("%s: some chunk hit the new-token cap: the audio may be cut short (%s)", out, _cap_hint(args))
    return 0


def _batch_requests(rows, default_seed: int, weights_release: str) -> list:
    from .engines.step_audio_editx import EditRequest, check_edit_request

    requests = []
    for row in rows:
        audio, rate = _read_clip(row.input, f"{row.label}: ", long_form=True)
        text = _transcript(row.input, row.text)
        request = EditRequest(audio=audio, sample_rate=rate, audio_text=text, edit_type=row.edit_type,
                              edit_value=row.value, new_text=row.new_text, n_iterations=row.iterations,
                              seed=default_seed if row.seed is None else row.seed)
        requests.append(check_edit_request(request, f"{row.label}: ", weights_release))
    return requests


def cmd_batch(args) -> int:
    from .utils.files.manifest import read_manifest

    rows = read_manifest(args.manifest)
    names = [row.output or f"{i:04d}_{row.input.stem}_{row.edit_type.strip().lower()}.wav"
             for i, row in enumerate(rows)]
    outputs = check_batch_outputs(args.out_dir, names, [row.label for row in rows], [row.input for row in rows])
    settings = _settings(args)
    _check_model_options(args)
    requests = _batch_requests(rows, args.seed, args.weights_release)
    engine = _engine(args)
    results = _with_progress(lambda bar: engine.batch_edit(requests, settings, progress=bar))
    failed = 0
    for row, out, result in zip(rows, outputs, results):
        try:
            _log_transcript(f"{row.label} -> {out}", result)
            _save(out, result, _cap_hint(args), f"{row.label} -> {out}")
        except (OutputWriteError, RuntimeError) as exc:  # keep every other finished result
            logger.error("%s: %s", row.label, exc)
            failed += 1
    if failed:
        logger.error("%d of %d results could not be saved (see above); the others were written.", failed, len(rows))
    return EXIT_FAILED if failed else 0



def cmd_make_tiny_model(args) -> int:
    from .engines.step_audio_editx import write_tiny_model

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder for the tiny model.")
    folders = write_tiny_model(out, seed=args.seed)
    logger.info("Tiny model written: %s and %s", folders.editx, folders.tokenizer)
    return 0


COMMANDS = {"edit": cmd_edit, "clone": cmd_clone, "batch": cmd_batch, "make-tiny-model": cmd_make_tiny_model}


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # huggingface_hub prints through a handler of its own AND passes every record on to ours: keep its copy only
    logging.getLogger("huggingface_hub").propagate = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OutputPathError) as exc:  # bad input or set-up: one line, no traceback
        logger.error("%s", exc)
        logger.debug("details", exc_info=True)  # --log-level DEBUG shows where
        return EXIT_USAGE
    except (OutputWriteError, RuntimeError) as exc:  # the run itself failed: say so without a traceback
        logger.error("%s", exc)
        logger.debug("details", exc_info=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        logger.error("Interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
