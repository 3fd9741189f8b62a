"""Triton as every kernel module of the pack imports it: the package (None on CPU-only installs, with the
reason) and libdevice, the CUDA math library's functions as PyTorch's own kernels call them (so exp, log,
rsqrt, sin ... round as torch's do). One place for the LM's kernels (``lm/``) and the decoder's
(``decoder/``), which do not import each other."""

from __future__ import annotations

import os

try:  # triton ships with CUDA builds of torch; CPU-only installs have none
    import triton
    import triton.language as tl

    TRITON_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the install
    triton = None
    tl = None
    TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

HAS_TRITON = triton is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter runs the kernels (tests)
device_math = None
if HAS_TRITON:
    try:
        from triton.language.extra import libdevice as device_math
    except Exception:  # pragma: no cover - older triton
        device_math = tl
    if INTERPRETED:  # the CPU interpreter has no libdevice
        device_math = tl
