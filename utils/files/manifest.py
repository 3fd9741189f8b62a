"""The batch manifest: one JSON object per line, checked field by field with ``file:line`` in every message."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .text_files import TextFileError, read_text_file

FIELDS: dict[str, str] = {  # name -> what it holds (shown in messages)
    "input": "the audio file to edit (relative to the manifest's folder)",
    "edit_type": "emotion, style, speed, paralinguistic, denoise or vad",
    "value": "the emotion / style / speed value",
    "text": "the transcript of the input",
    "new_text": "paralinguistic: the transcript with [Laughter]-style tags",
    "iterations": "edit passes, 1-5",
    "seed": "a whole number",
    "output": "the output file name inside --out-dir",
}
REQUIRED_FIELDS = ("input", "edit_type")
INT_FIELDS = ("iterations", "seed")


class ManifestError(ValueError):
    """A manifest line that cannot be a request; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class ManifestRow:
    """One request of the manifest, fields type-checked (vocabulary and audio are checked later)."""

    label: str  # "jobs.jsonl:3", for messages
    input: Path
    edit_type: str
    value: Optional[str] = None
    text: Optional[str] = None
    new_text: Optional[str] = None
    iterations: object = 1  # checked with the edit (1..MAX_EDIT_ITERATIONS)
    seed: Optional[int] = None  # None: --seed
    output: Optional[str] = None


def _whole_number(label: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not value.strip().lstrip("+-").isdigit()):
        raise ManifestError(f"{label}: \"{name}\" must be a whole number, got {json.dumps(value)}.")
    return int(value)


def _row(label: str, base: Path, data: object) -> ManifestRow:
    if not isinstance(data, dict):
        raise ManifestError(f"{label}: each line must be a JSON object like {{\"input\": \"a.wav\", \"edit_type\": "
                            f"\"emotion\", \"value\": \"happy\"}}, got {type(data).__name__}.")
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f" Did you mean \"{close[0]}\"?" if close else f" Known fields: {', '.join(FIELDS)}."
            raise ManifestError(f"{label}: unknown field \"{key}\".{hint}")
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise ManifestError(f"{label}: each line needs \"input\" and \"edit_type\" (missing \"{key}\": "
                                f"{FIELDS[key]}).")
    for key, value in data.items():
        if key not in INT_FIELDS and value is not None and not isinstance(value, str):
            raise ManifestError(f"{label}: \"{key}\" must be a string ({FIELDS[key]}), got {json.dumps(value)}.")
    if not data["input"].strip():
        raise ManifestError(f"{label}: \"input\" is empty; give the audio file to edit.")
    source = Path(data["input"]).expanduser()
    seed = data.get("seed")
    return ManifestRow(
        label=label, input=source if source.is_absolute() else base / source, edit_type=data["edit_type"],
        value=data.get("value"), text=data.get("text"), new_text=data.get("new_text"),
        iterations=_whole_number(label, "iterations", data["iterations"]) if "iterations" in data else 1,
        seed=None if seed is None else _whole_number(label, "seed", seed), output=data.get("output"))


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Every request of a JSONL manifest (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    text = read_text_file(path, "manifest")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label = f"{path.name}:{n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{label}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
        rows.append(_row(label, path.parent, data))
    if not rows:
        raise ManifestError(f"{path} holds no requests: write one JSON object per line, e.g. "
                            "{\"input\": \"a.wav\", \"edit_type\": \"emotion\", \"value\": \"happy\"}.")
    return rows


__all__ = ["FIELDS", "ManifestError", "ManifestRow", "TextFileError", "read_manifest"]
