"""Where the pack keeps per-user caches: ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/comfyui_step_audio_editx``."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_CACHE_NAME = "comfyui_step_audio_editx"


def package_cache_dir() -> Path:
    """The pack's cache folder (not created here: writers create what they need)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / PACKAGE_CACHE_NAME
