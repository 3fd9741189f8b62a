"""Whether a GPU runs the decoder's Triton kernels (``fused_norms``, ``snake``; their import: ``triton_import``).

Why a probe: Triton compiles only for the cards it supports, and a CUDA build of torch brings Triton along
whatever the card. Older cards would fail inside the flow; instead, one tiny kernel is compiled, run and
checked once per GPU, and where that fails the decoder keeps PyTorch's own ops there (said once in the log).
"""

from __future__ import annotations

import torch

from ..kernel_probe import run_probe
from ..triton_import import device_math, tl, triton

PROBE_SIZE = 64  # elements of the probe kernel's one block
PROBE_TOLERANCE = 1e-2
_RUNS: dict[int, bool] = {}  # CUDA device index -> the probe passed

if triton is not None:

    @triton.jit
    def _probe_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, (device_math.sin(x) * 2.0).to(out_ptr.dtype.element_ty), mask=mask)


def kernels_run_on(device: torch.device) -> bool:
    """Whether the decoder's Triton kernels run on ``device`` (False off CUDA, without Triton, or where the probe
    failed). Asked while a CUDA graph is being captured before any probe, it answers False: a probe cannot run
    inside a capture."""
    if triton is None or device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _RUNS:
        if torch.cuda.is_current_stream_capturing():
            return False
        _RUNS[index] = _probe(torch.device("cuda", index))
    return _RUNS[index]


def _probe(device: torch.device) -> bool:
    def check() -> str | None:
        x = torch.linspace(-3.0, 3.0, PROBE_SIZE, device=device, dtype=torch.float16)
        out = torch.empty_like(x)
        _probe_kernel[(1,)](x, out, x.numel(), BLOCK=PROBE_SIZE)
        if torch.allclose(out.float(), torch.sin(x.float()) * 2.0, atol=PROBE_TOLERANCE):
            return None
        return "its probe computed wrong values"

    return run_probe(str(device), "The flow decoder's and vocoder's Triton kernels",
                     "PyTorch's own ops run there instead (same results, slower)", check) is None
