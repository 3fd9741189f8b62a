"""Output paths, checked before any model work, and audio written so that a failure leaves no broken file.

A bad output (a folder, a format soundfile cannot write, an unwritable place, the input itself, two
results aimed at one file, a name that leaves the output folder) is an ``OutputPathError`` raised
before the model loads. Writing goes to a temporary file in the target folder that is renamed over the
target only when complete, so a full disk or an interrupt never leaves a half-written WAV.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

AUDIO_OUTPUT_SUFFIXES: dict[str, str] = {".wav": "WAV", ".flac": "FLAC"}  # lossless, 16-bit PCM
OUTPUT_SUBTYPE = "PCM_16"
TEMP_PREFIX = ".step-audio-editx-"


class OutputPathError(ValueError):
    """An output path that cannot receive the result; says what to pass instead."""


class OutputWriteError(OSError):
    """Writing a finished result failed (disk full, permissions); the target file was left untouched."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def _probe_writable(folder: Path, shown: str) -> None:
    """Create and delete a file in ``folder``: the one test that is right on every OS and file system."""
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"cannot write {shown}: {exc.strerror or exc} in {folder}. Choose a folder you can "
                              "write to.") from None
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | Path, inputs: Iterable[str | Path] = (), what: str = "output") -> Path:
    """``path`` as a Path after checking that a finished result can be written there (nothing is created).

    Raises OutputPathError for: an unsupported suffix, an existing folder, a parent that is a file or
    not writable, or a path that is one of ``inputs`` (the result would overwrite its own source).
    """
    raw = str(path)
    path = Path(path).expanduser()
    shown = f"{what} {raw!r}"
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise OutputPathError(f"{shown} is a folder; give a file name such as {Path(raw) / 'out.wav'}.")
    suffix = path.suffix.lower()
    if suffix not in AUDIO_OUTPUT_SUFFIXES:
        raise OutputPathError(f"{shown} must end in {' or '.join(AUDIO_OUTPUT_SUFFIXES)} (lossless 16-bit audio), "
                              f"got {suffix or 'no suffix'!r}; convert to other formats afterwards (e.g. ffmpeg).")
    for source in inputs:
        if _same_file(path, Path(source)) or path.resolve() == Path(source).expanduser().resolve():
            raise OutputPathError(f"{shown} is the input file {source}; the result would overwrite its own source. "
                                  "Choose another output name.")
    existing = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {shown}: {existing} is a file, not a folder.")
    _probe_writable(existing, shown)
    return path


def check_batch_outputs(out_dir: str | Path, names: Sequence[str], labels: Sequence[str],
                        inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Each batch row's output inside ``out_dir``: checked as above, never outside the folder, never shared.

    ``labels`` name the rows in messages (e.g. ``jobs.jsonl:3``).
    """
    root = Path(out_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise OutputPathError(f"--out-dir {str(out_dir)!r} is a file; give a folder.")
    resolved_root = root.resolve()
    seen: dict[Path, str] = {}
    paths = []
    for name, label in zip(names, labels, strict=True):
        target = root / name
        if not target.resolve().is_relative_to(resolved_root):
            raise OutputPathError(f"{label}: output {name!r} points outside --out-dir {str(out_dir)!r}; give a name "
                                  "inside it (no '..', no absolute path elsewhere).")
        path = check_output_path(target, inputs, what=f"{label}: output")
        key = Path(os.path.normcase(path.resolve()))
        if key in seen:
            raise OutputPathError(f"{label}: output {name!r} is also the output of {seen[key]}; give each row its "
                                  "own output name.")
        seen[key] = label
        paths.append(path)
    return paths


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_audio_atomic(path: str | Path, waveform, sample_rate: int) -> Path:
    """Write ``waveform`` ([T] or [C, T] float tensor / array) as 16-bit PCM, via a temp file renamed over ``path``."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    data = waveform.detach().cpu().float().numpy() if hasattr(waveform, "detach") else np.asarray(waveform, np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants [T, C]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual permissions
        sf.write(temp, data, sample_rate, subtype=OUTPUT_SUBTYPE, format=AUDIO_OUTPUT_SUFFIXES[path.suffix.lower()])
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OutputWriteError(f"could not write {path}: {reason}. Nothing was written there; free some space "
                                   "or choose another folder.") from exc
        raise
    return path
