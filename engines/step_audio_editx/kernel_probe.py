"""One-off probes of a kernel family on a device: use it only where it agrees with the torch reference."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def run_probe(device: str, what: str, instead: str, probe: Callable[[], str | None]) -> str | None:
    """``probe()``'s problem, or None when the kernels agree with the reference. An exception (a compiler or
    driver refusal, a failed check) is the problem too. A problem is logged once, with what runs instead."""
    try:
        problem = probe()
    except Exception as exc:  # noqa: BLE001 - any refusal means: do not use these kernels here
        text = str(exc).strip()
        problem = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    if problem is not None:
        logger.warning("%s do not run on %s (%s); %s", what, device, problem, instead)
    return problem
