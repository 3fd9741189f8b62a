"""Running a test file's kernel checks in Triton's CPU interpreter. The interpreter is chosen when kernels are
decorated, so the checks run in a child process: the test file run as a script with the check names, printing
``name:ok`` for each one that passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest


def run_interpreted_checks(script: str, names: Sequence[str]) -> None:
    """Run ``script``'s checks ``names`` under ``TRITON_INTERPRET=1``; every one must print ``name:ok``."""
    pytest.importorskip("triton", reason="needs Triton (its CPU interpreter runs the kernels)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, script, *names], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.split() == [f"{name}:ok" for name in names], done.stdout + done.stderr[-2000:]


def allow_numpy2_scalars() -> None:
    """Let Triton 3.5's interpreter take a runtime scalar as a loop bound under numpy 2: it calls ``int()`` on
    the scalar's 1-element array, which numpy 2 refuses (3.6 passes a patch scope too). Call it in the child
    process before the kernels run."""
    import numpy as np
    import triton.runtime.interpreter as interp

    patch = interp._patch_lang_tensor

    def numpy2_index(tensor, *scope):
        patch(tensor, *scope)
        tensor.__index__ = lambda self: int(np.asarray(self.handle.data).reshape(-1)[0])

    interp._patch_lang_tensor = numpy2_index


def report_checks(check: Callable[[str], bool], names: Sequence[str]) -> None:
    """The child process's side of ``run_interpreted_checks``: run each check, print ``name:ok`` where it
    passes (the numpy-2 patch first)."""
    allow_numpy2_scalars()
    for name in names:
        if check(name):
            print(f"{name}:ok")


def interleaved_matrix(scheme, rows: int, cols: int):
    """A random [rows, cols] weight quantized to ``scheme`` (drawn from torch's global generator, which the checks
    seed): (its interleaved words, its scales, the float32 dequantized weight every kernel is compared with)."""
    import torch
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant import interleaved
    from comfyui_step_audio_editx.engines.step_audio_editx.lm.quant.format import dequantize, quantize

    packed, scale = quantize(torch.randn(rows, cols) * 0.02, scheme)
    return interleaved.interleave(packed, scheme), scale, dequantize(packed, scale, scheme, torch.float32)


def role_pairs(run, x, gu, r, norm, w, eps: float = 1e-5, prologues: bool = True) -> list:
    """(kernel output, dequantize-then-matmul) the ways the decode step runs a role: x as it is; added into the
    residual ``r``; and unless ``prologues`` is False (a kernel mode without them), RMSNorm(x) * norm first and
    SwiGLU of ``gu`` first (both added into ``r``). ``run(x, **kwargs)`` calls the kernel with the prologue /
    residual arguments every quantized launcher takes."""
    from comfyui_step_audio_editx.engines.step_audio_editx.lm import decode_ops as ref

    pairs = [(run(x), x @ w.T), (run(x, residual=r.clone()), r + x @ w.T)]
    if prologues:
        pairs += [(run(x, norm_weight=norm, eps=eps, residual=r.clone()), r + ref.rms_norm(x, norm, eps) @ w.T),
                  (run(gu, swiglu=True, residual=r.clone()), r + ref.silu_mul(gu) @ w.T)]
    return pairs


def worst_error(pairs, worst: float = 0.0) -> float:
    """The largest error of ``pairs`` (and ``worst``), relative to the largest expected magnitude of its pair."""
    return max([worst] + [float((got - want).abs().max() / want.abs().max()) for got, want in pairs])
