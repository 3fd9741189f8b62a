"""Running a test file's kernel checks in Triton's CPU interpreter. The interpreter is chosen when kernels are
decorated, so the checks run in a child process: the test file run as a script with the check names, printing
``name:ok`` for each one that passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import pytest


def run_interpreted_checks(script: str, names: Sequence[str]) -> None:
    """Run ``script``'s checks ``names`` under ``TRITON_INTERPRET=1``; every one must print ``name:ok``."""
    pytest.importorskip("triton", reason="needs Triton (its CPU interpreter runs the kernels)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, script, *names], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.split() == [f"{name}:ok" for name in names], done.stdout + done.stderr[-2000:]
