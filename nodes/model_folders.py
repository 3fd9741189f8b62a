"""Hub-style Step-Audio-EditX model folders under ComfyUI's ``models/TTS`` roots (a combo lists folders, not files).

A folder qualifies when it holds a ``config.json`` whose ``model_type`` is ``step1`` (the official
``Step-Audio-EditX`` layout); ``Step-Audio-Tokenizer`` is found beside it by the engine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from ..engines.step_audio_editx import AWQ_DIRNAME, EDITX_DIRNAME

logger = logging.getLogger(__name__)

AUTO_DOWNLOAD = "auto (download if missing)"
AUTO_DOWNLOAD_AWQ = f"auto {AWQ_DIRNAME} (download if missing)"
STEP1_MODEL_TYPE = "step1"
CONFIG_FILE = "config.json"
SEARCH_DEPTH = 2  # models/TTS/Step-Audio-EditX and models/TTS/<org>/Step-Audio-EditX


class ModelFolderError(ValueError):
    """A model folder named in a workflow is not under any models/TTS root."""


def _is_editx_folder(folder: Path) -> bool:
    config = folder / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        with open(config, encoding="utf-8") as f:
            return json.load(f).get("model_type") == STEP1_MODEL_TYPE
    except (OSError, ValueError, AttributeError) as exc:
        logger.debug("Skipping %s: unreadable %s (%s)", folder, CONFIG_FILE, exc)
        return False


def list_model_folders(roots: Sequence[Path | str]) -> list[str]:
    """Names (relative to their root, '/'-separated) of the EditX folders found, official name first."""
    found: list[str] = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        level = [root]
        for _depth in range(SEARCH_DEPTH):
            level = sorted(p for parent in level for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
            for folder in level:
                name = folder.relative_to(root).as_posix()
                if name not in found and _is_editx_folder(folder):
                    found.append(name)
    return sorted(found, key=lambda n: (n != EDITX_DIRNAME, n.lower()))


def model_choices(roots: Sequence[Path | str]) -> list[str]:
    """The Engine node's combo: every folder found, then the auto-download options (bf16, StepFun's 4-bit)."""
    return [*list_model_folders(roots), AUTO_DOWNLOAD, AUTO_DOWNLOAD_AWQ]


def resolve_model_choice(choice: str, roots: Sequence[Path | str]) -> tuple[str | None, bool]:
    """(editx_dir, download) for a combo value: a folder path, or (None, True) for auto-download."""
    if choice == AUTO_DOWNLOAD:
        return None, True
    if choice == AUTO_DOWNLOAD_AWQ:
        roots = [Path(r) for r in roots]
        existing = [r / AWQ_DIRNAME for r in roots if (r / AWQ_DIRNAME).is_dir()]
        if existing or roots:
            return str((existing or [roots[0] / AWQ_DIRNAME])[0].resolve()), True
        raise ModelFolderError(f"No models/TTS folder is registered to download {AWQ_DIRNAME} into.")
    for root in map(Path, roots):
        folder = root / choice
        if folder.is_dir():
            return str(folder.resolve()), False
    where = ", ".join(str(r) for r in roots) or "(no models/TTS folder registered)"
    raise ModelFolderError(
        f"Model folder {choice!r} is not under any TTS model folder ({where}). Put Step-Audio-EditX/ and "
        f"Step-Audio-Tokenizer/ there, or choose {AUTO_DOWNLOAD!r} on the Engine node."
    )
