"""Remember the timed decode-matmul choices on disk, so one machine always runs the same kernels.

``decode_linears.select_linears`` times every candidate kernel per role and keeps the fastest. Candidates
sum in different orders, so two processes that pick different ones (near-equal timings flip with noise)
give different bf16 logits, and a seed would not reproduce its audio across restarts. Storing the first
choice per (GPU, software, shapes, batch bucket) makes later processes on the same machine use exactly the
same kernels, hence the same tokens for the same seed, and skips the timing too.

The file is ``<package cache>/decode_matmuls.json``; ``STEP_AUDIO_EDITX_KERNEL_CHOICES`` names another
file, or ``off`` to time anew in every process. The key holds the candidate lists, so a pack whose kernel
list changed times again; a stored choice that is no longer a candidate is ignored all the same.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..cache_dirs import package_cache_dir

logger = logging.getLogger(__name__)

STORE_ENV = "STEP_AUDIO_EDITX_KERNEL_CHOICES"
STORE_OFF = ("off", "0", "false", "no")
STORE_FILE = "decode_matmuls.json"
STORE_FORMAT = 1


def store_path() -> Path | None:
    """The file choices are kept in, or None when persistence is switched off."""
    value = os.environ.get(STORE_ENV, "").strip()
    if value.lower() in STORE_OFF:
        return None
    return Path(value) if value else package_cache_dir() / STORE_FILE


def store_key(parts: Iterable[Any]) -> str:
    """A stable text key of the selection's identity (device name, versions, dtype, shapes, ...)."""
    return json.dumps([str(p) for p in parts])


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring the unreadable decode kernel choices in %s (%s); they are timed again", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT or not isinstance(data.get("choices"), dict):
        return {}
    return data["choices"]


def load(key: str, valid: dict[str, Sequence[Any]], decode) -> dict[str, Any] | None:
    """The stored choice per role for ``key``, or None. ``valid[role]``: today's candidates of that role;
    ``decode(entry)``: a stored entry back to a choice (an exception means the entry is stale)."""
    path = store_path()
    if path is None:
        return None
    entry = _read(path).get(key)
    if not isinstance(entry, dict) or set(entry) != set(valid):
        return None
    try:
        chosen = {role: decode(entry[role]) for role in valid}
    except (TypeError, ValueError, KeyError):
        return None
    if any(chosen[role] not in valid[role] for role in valid):
        return None
    return chosen


def save(key: str, chosen: dict[str, Any], encode) -> None:
    """Add ``key``'s choices to the store (written atomically; a failure only costs re-timing later)."""
    path = store_path()
    if path is None:
        return
    choices = _read(path)
    choices[key] = {role: encode(choice) for role, choice in chosen.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"format": STORE_FORMAT, "choices": choices}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("Could not store the decode kernel choices in %s (%s): they are timed again next time",
                       path, exc)
        tmp.unlink(missing_ok=True)
