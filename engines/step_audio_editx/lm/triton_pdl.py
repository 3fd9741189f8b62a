"""Programmatic dependent launch (PDL) for the decode kernels: hide each kernel's launch ramp and tail.

Why: a batch-1 decode step is ~160 short kernels in a row. Between two of them the GPU idles while the
last blocks of one drain and the next one is launched and ramps up its first memory requests. With PDL
(Hopper and later, CUDA >= 12.3, also inside CUDA graphs) a kernel launched with ``launch_pdl=True`` may
start while its predecessor still runs; it then

1. asks the L2 cache for the first weight tile it will stream (or, for attention, the cached keys and
   values of its chunk): a prefetch is only a hint, it reads nothing into registers,
2. waits for the predecessor to complete and its writes to be visible (``gdc_wait``),
3. runs exactly the code it ran before, and once its main loop has issued its last loads, tells the
   runtime that its own successor may launch (``release``; a kernel without it releases when it exits).

Nothing computed depends on step 1, so the results are bit-identical with and without PDL (the GPU test
checks whole generations token for token). Every block of a PDL kernel passes the wait before it exits,
so a kernel's completion still implies its predecessor's. The release comes late on purpose: released
at the start (measured on the H200, 2026-12-04), the successors' blocks of several kernels ahead
occupied the GPU early and a batch-1 step got 10 % slower.

The switch: ``DecodeOptions(pdl=False)`` or the environment variable ``STEP_AUDIO_EDITX_PDL=0``.
"""

from __future__ import annotations

import os

import torch

try:  # triton ships with CUDA builds of torch; grid dependency control arrived in triton 3.3
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401 (presence check)

    HAS_GDC = True
except Exception:  # pragma: no cover - CPU-only installs, or an older triton
    triton = tl = None
    HAS_GDC = False

PDL_ENV = "STEP_AUDIO_EDITX_PDL"
PDL_MIN_CAPABILITY = (9, 0)  # griddepcontrol: sm_90 and later
CACHE_LINE_BYTES = 128  # one L2 prefetch covers one line
FALSE_VALUES = ("0", "false", "no", "off")


def capable(device: torch.device) -> bool:
    """The GPU and the triton build can launch programmatic dependents."""
    if not HAS_GDC or device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= PDL_MIN_CAPABILITY


def supported(device: torch.device) -> bool:
    """PDL is used by default where the GPU, the triton build and the environment allow it."""
    return capable(device) and os.environ.get(PDL_ENV, "").strip().lower() not in FALSE_VALUES


def line_elements(dtype: torch.dtype) -> int:
    """Elements of ``dtype`` per cache line (the prefetch granularity)."""
    return max(1, CACHE_LINE_BYTES // torch.empty((), dtype=dtype).element_size())


if HAS_GDC:  # the kernels only call these under a PDL constexpr, which is never set without them

    @triton.jit
    def prefetch_l2(ptrs):
        """Ask L2 for the lines at ``ptrs`` (any shape); no data reaches registers, nothing can fault."""
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs.to(tl.int64)],
                                  dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def enter():
        """A PDL kernel without anything worth prefetching: wait for the predecessor."""
        tl.extra.cuda.gdc_wait()

    @triton.jit
    def release():
        """This block's main loads are issued: the successor may launch (once every block got here)."""
        tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def enter_rows(w_ptr, rn, N, K, stride_w, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LINE: tl.constexpr):
        """``enter`` for a matmul program owning weight rows ``rn``: prefetch its first [BLOCK_N, BLOCK_K] tile."""
        rows = tl.minimum(rn, N - 1)
        cols = tl.minimum(tl.arange(0, BLOCK_K // LINE) * LINE, K - 1)
        prefetch_l2(w_ptr + rows[:, None] * stride_w + cols[None, :])
        tl.extra.cuda.gdc_wait()

    @triton.jit
    def enter_kv(k_base, v_base, kv_len_ptr, b, split, stride_kl, DIM: tl.constexpr, CHUNK: tl.constexpr,
                 DIM_LINES: tl.constexpr, LINE: tl.constexpr):
        """``enter`` for an attention chunk program: prefetch the cached keys / values of its chunk. The
        length read here only steers the prefetch (slots clamped inside the row's cache); the kernel
        reads it again after the wait."""
        last = tl.maximum(tl.load(kv_len_ptr + b) - 2, 0)  # the last cached slot before the new token
        slots = tl.minimum(split * CHUNK + tl.arange(0, CHUNK), last)
        cols = tl.minimum(tl.arange(0, DIM_LINES) * LINE, DIM - 1)
        offs = slots[:, None] * stride_kl + cols[None, :]
        prefetch_l2(k_base + offs)
        prefetch_l2(v_base + offs)
        tl.extra.cuda.gdc_wait()
