"""One decode layer as ONE launch (issue 19): the matmuls and attention of ``triton_decode`` /
``triton_attention`` as phases of a persistent kernel, separated by grid-wide barriers, for 1-16 rows.

Why: a decode step is 160 launches (5 per layer), and each pays a fixed cost beyond its bytes (the H200
per-role times at batch 1 fit ~3-4.5 us per kernel on top of streaming at ~4.5 TB/s). Programmatic dependent
launch did not remove it at batch 1 (docs/performance.md). Here one launch per layer runs

    qkv = W_qkv · norm1(x)  |  attention (split chunks + merge)  |  x += W_o · attn
    |  gu = W_gu · norm2(x)  |  x += W_down · swiglu(gu)

with every program looping over its share of each phase's tiles, and a barrier between phases, so four of
the five kernel boundaries per layer become barriers.

Same arithmetic as the separate kernels: a phase's tile is the very code a standalone kernel runs
(``triton_decode._gemv_tile`` for one row, ``_skinny_tile`` for 2-16, ``triton_attention._attn_item``) with the
same tile sizes and warps, so with the same matmul configurations the bits should be the ones of the plain
step (the GPU tests check it bit for bit and token for token; ``tests/test_triton_compile.py`` checks the
compiled layouts and floating-point instructions). Sizes and strides the standalone kernels get as runtime
numbers stay runtime numbers here.
The warps are the attention kernel's (``PERSISTENT_WARPS``), so the matmul configurations come from the ones
with that many warps (``decode_linears.candidates(mode="persistent")``).

The barrier needs every program resident at once: the launch is cooperative (the driver refuses a grid
that cannot be), and its size comes from the driver's occupancy for the compiled kernel. It counts tickets
on one int64 counter that is never reset: a program's ticket says which barrier it is at (every barrier
adds exactly one ticket per program), so any number of layers, launches and graph replays share it. In
Triton's CPU interpreter (tests) programs run one after another, so there the same kernel runs phase by
phase (``phased=True``: one launch per phase, no barrier).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..triton_import import HAS_TRITON, tl, triton
from . import triton_decode
from .decode_ops import AttentionShape
from .triton_attention import ATTN_BLOCK_N, AttentionWorkspace, _attn_item, shape_constexprs
from .triton_decode import (MIN_DOT_ROWS, _block_m, _even, _gemv_tile, _precision, _rms_factor, _rows_and_factor,
                            _skinny_tile)

logger = logging.getLogger(__name__)

PERSISTENT_WARPS = 4  # the attention kernel's: every phase compiles as its standalone kernel does
PHASES = 5  # qkv, attention, o, gate_up, down
MAX_PROGRAMS_PER_SM = 8  # beyond this the barrier's arrivals cost more than the extra loads in flight hide
# Register cap: left alone, ptxas gives the kernel 254 registers for its attention phase (the standalone
# attention kernel: 128), which leaves room for two programs per SM; at 128 four fit, and the matmul phases
# (96) keep more loads in flight. At the cap nothing spills at one row (sm_90 compile; same arithmetic).
PERSISTENT_MAX_REGISTERS = 128
LAUNCH_OPTIONS = dict(num_warps=PERSISTENT_WARPS, maxnreg=PERSISTENT_MAX_REGISTERS)
# Tensor-core phases under that cap (ptxas, sm_90, every phase on one configuration, 16 rows): k-steps of 128
# and 256 spill 16-36 bytes, 512 spills 7.7 KB (and takes 114 KB of shared memory), so it is not a candidate.
PERSISTENT_MAX_DOT_BLOCK_K = 256


def runs_config(config: tuple[int, ...], rows: int) -> bool:
    """Whether a matmul configuration (BLOCK_N, BLOCK_K, warps, ...) is one the persistent kernel runs well:
    the attention kernel's warps, and for 2-16 rows a k-step that fits the register cap."""
    return config[2] == PERSISTENT_WARPS and (rows == 1 or config[1] <= PERSISTENT_MAX_DOT_BLOCK_K)

if HAS_TRITON:

    @triton.jit
    def _grid_barrier(bar_ptr, programs):
        """Every program arrives before any goes on. The CTA's threads meet first, so one release by thread 0
        publishes all their writes (the grid sync of CUDA's cooperative groups does the same). The count is
        polled by thread 0 with relaxed loads (no L1 flush per look, one request per program); one acquire
        once it is reached (which also drops the SM's stale L1 lines) orders every later read of the CTA after
        all the releases. Ticket t belongs to the barrier
        that ends when the counter reaches the next multiple of ``programs``: a program can take a ticket of
        the next barrier only after this one ended, so the counter needs no reset."""
        tl.debug_barrier()
        ticket = tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
        target = (ticket // programs + 1) * programs
        seen = tl.atomic_add(bar_ptr, 0, sem="relaxed", scope="gpu")  # thread 0 looks; the others wait
        while seen < target:
            seen = tl.atomic_add(bar_ptr, 0, sem="relaxed", scope="gpu")
        seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")  # orders this CTA's later reads
        while seen < target:  # never loops (the count only grows); its use keeps the acquire in the code
            seen = tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()

    @triton.jit
    def _matmul_phase(x_ptr, w_ptr, out_ptr, norm_ptr, rows, N, K, eps, stride_x, stride_w, stride_out,
                      PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      EVEN: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
        """This program's tiles of one matmul (tile = program, program + programs, ...): ``_skinny_tile`` for
        2-16 rows (DOT), ``_gemv_tile`` for one. The RMSNorm scales are computed once per program: the values
        every program of the standalone kernels computes for itself."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        if DOT:
            rm, mmask, factor = _rows_and_factor(x_ptr, rows, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
            for tile in range(pid, tl.cdiv(N, BLOCK_N), programs):
                _skinny_tile(tile, rm, mmask, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_x, stride_w,
                             stride_out, PROLOGUE, RESIDUAL, BLOCK_M, BLOCK_N, BLOCK_K, EVEN, PRECISION, False)
        else:
            factor = tl.zeros([], tl.float32)
            if PROLOGUE == 1:
                factor = _rms_factor(x_ptr, K, eps, BLOCK_K)
            for tile in range(pid, tl.cdiv(N, BLOCK_N), programs):
                _gemv_tile(tile, factor, x_ptr, w_ptr, out_ptr, norm_ptr, N, K, stride_w, PROLOGUE, RESIDUAL,
                           BLOCK_N, BLOCK_K, EVEN, False)

    @triton.jit(do_not_specialize=["rows"])  # as the standalone tensor-core kernel's M: one binary per bucket
    def _layer_kernel(resid_ptr, qkv_ptr, attn_ptr, gu_ptr, w_qkv_ptr, w_o_ptr, w_gu_ptr, w_down_ptr,
                      norm1_ptr, norm2_ptr, k_ptr, v_ptr, kv_len_ptr, slopes_ptr, part_o_ptr, part_ml_ptr,
                      counter_ptr, bar_ptr, rows, hidden, qkv_rows, attn_width, gu_width, inner, eps, stride_qkv_w,
                      stride_o_w, stride_gu_w, stride_down_w, stride_kb, stride_kg, stride_kl, n_splits, scale,
                      HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                      QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N_ATTN: tl.constexpr,
                      PRECISION: tl.constexpr, MERGE_AHEAD: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                      QKV_BN: tl.constexpr, QKV_BK: tl.constexpr, QKV_EVEN: tl.constexpr,
                      O_BN: tl.constexpr, O_BK: tl.constexpr, O_EVEN: tl.constexpr,
                      GU_BN: tl.constexpr, GU_BK: tl.constexpr, GU_EVEN: tl.constexpr,
                      DOWN_BN: tl.constexpr, DOWN_BK: tl.constexpr, DOWN_EVEN: tl.constexpr,
                      FIRST: tl.constexpr, LAST: tl.constexpr, BARRIER: tl.constexpr):
        """Phases FIRST..LAST of one layer for ``rows`` rows (see the module docstring); BARRIER between them.
        Activations are contiguous [rows, width] buffers, so a row's stride is its width."""
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        if FIRST <= 0 and LAST >= 0:  # qkv = W_qkv · RMSNorm(x)
            _matmul_phase(resid_ptr, w_qkv_ptr, qkv_ptr, norm1_ptr, rows, qkv_rows, hidden, eps, hidden,
                          stride_qkv_w, qkv_rows, 1, False, QKV_BN, QKV_BK, QKV_EVEN, DOT, BLOCK_M, PRECISION)
            if BARRIER:
                _grid_barrier(bar_ptr, programs)
        if FIRST <= 1 and LAST >= 1:  # attention: (row, group, chunk) items, the last chunk of a pair merges
            for item in range(pid, rows * GROUPS * n_splits, programs):
                _attn_item(item % (rows * GROUPS), item // (rows * GROUPS), qkv_ptr, k_ptr, v_ptr, kv_len_ptr,
                           slopes_ptr, part_o_ptr, part_ml_ptr, attn_ptr, counter_ptr, qkv_rows, stride_kb, stride_kg,
                           stride_kl, attn_width, n_splits, scale, HEADS, GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK,
                           BLOCK_N_ATTN, PRECISION, True, False, MERGE_AHEAD)
            if BARRIER:
                _grid_barrier(bar_ptr, programs)
        if FIRST <= 2 and LAST >= 2:  # x += W_o · attn
            _matmul_phase(attn_ptr, w_o_ptr, resid_ptr, resid_ptr, rows, hidden, attn_width, eps, attn_width,
                          stride_o_w, hidden, 0, True, O_BN, O_BK, O_EVEN, DOT, BLOCK_M, PRECISION)
            if BARRIER:
                _grid_barrier(bar_ptr, programs)
        if FIRST <= 3 and LAST >= 3:  # gu = W_gu · RMSNorm(x)
            _matmul_phase(resid_ptr, w_gu_ptr, gu_ptr, norm2_ptr, rows, gu_width, hidden, eps, hidden, stride_gu_w,
                          gu_width, 1, False, GU_BN, GU_BK, GU_EVEN, DOT, BLOCK_M, PRECISION)
            if BARRIER:
                _grid_barrier(bar_ptr, programs)
        if FIRST <= 4 and LAST >= 4:  # x += W_down · (silu(gate) * up)
            _matmul_phase(gu_ptr, w_down_ptr, resid_ptr, resid_ptr, rows, hidden, inner, eps, gu_width,
                          stride_down_w, hidden, 2, True, DOWN_BN, DOWN_BK, DOWN_EVEN, DOT, BLOCK_M, PRECISION)


@dataclass(frozen=True)
class LayerConfigs:
    """(BLOCK_N, BLOCK_K) of the qkv, o, gate_up and down matmul phases (``PERSISTENT_WARPS`` warps each)."""

    qkv: tuple[int, int]
    o: tuple[int, int]
    gate_up: tuple[int, int]
    down: tuple[int, int]


class PersistentLayers:
    """The buffers, barrier counter and grid size of the persistent layer kernel for one batch bucket of ``rows``
    rows (1: the CUDA-core GEMV tiles; 2-16: the tensor-core ones)."""

    def __init__(self, rows: int, shape: AttentionShape, hidden: int, qkv_rows: int, inner: int,
                 configs: LayerConfigs, device: torch.device, dtype: torch.dtype) -> None:
        if not 1 <= rows <= MIN_DOT_ROWS:
            raise ValueError(f"the persistent layer kernel runs 1-{MIN_DOT_ROWS} rows, not {rows}")
        self.rows, self.shape, self.hidden, self.qkv_rows, self.inner = rows, shape, hidden, qkv_rows, inner
        self.configs = configs
        self.qkv = torch.empty(rows, qkv_rows, device=device, dtype=dtype)
        self.attn = torch.empty(rows, shape.num_heads * shape.head_dim, device=device, dtype=dtype)
        self.gate_up = torch.empty(rows, 2 * inner, device=device, dtype=dtype)
        self.barrier = torch.zeros(1, device=device, dtype=torch.int64)  # tickets (``_grid_barrier``)
        self.programs: int | None = None  # resident programs of the compiled kernel (set on first launch)

    def _constexprs(self, dtype: torch.dtype) -> dict:
        """The kernel's compile-time numbers: a phase's EVEN and BLOCK_M are what ``triton_decode.gemv`` /
        ``skinny_linear`` pass for its matrix."""
        c = self.configs
        found = dict(shape_constexprs(self.shape), BLOCK_N_ATTN=ATTN_BLOCK_N, PRECISION=_precision(dtype),
                     DOT=self.rows > 1, BLOCK_M=_block_m(self.rows))
        phases = {"QKV": (c.qkv, self.qkv_rows, self.hidden), "O": (c.o, self.hidden, self.attn.shape[1]),
                  "GU": (c.gate_up, 2 * self.inner, self.hidden), "DOWN": (c.down, self.hidden, self.inner)}
        for name, ((block_n, block_k), n, k) in phases.items():
            found.update({f"{name}_BN": block_n, f"{name}_BK": block_k,
                          f"{name}_EVEN": _even(n, k, block_n, block_k)})
        return found

    def run(self, layer: int, resid: torch.Tensor, weights, keys: torch.Tensor, values: torch.Tensor,
            kv_len: torch.Tensor, workspace: AttentionWorkspace, merge_ahead: bool = True,
            phased: bool = False, programs: int | None = None) -> None:
        """Layer ``layer`` of ``weights`` (``fused_weights.DecodeWeights``) on ``resid`` [rows, C] IN PLACE, writing
        the new keys / values into ``keys`` / ``values`` [rows, G, L, D]. ``phased``: one launch per phase, no
        barrier (Triton's interpreter; ``programs`` then sets the grid)."""
        w = weights
        args = (resid, self.qkv, self.attn, self.gate_up, w.qkv[layer], w.o[layer], w.gate_up[layer], w.down[layer],
                w.input_norms[layer], w.post_norms[layer], keys, values, kv_len, w.slopes, workspace.part_o,
                workspace.part_ml, workspace.counters, self.barrier, self.rows, self.hidden, self.qkv_rows,
                self.attn.shape[1], self.gate_up.shape[1], self.inner, w.eps,
                w.qkv[layer].stride(0), w.o[layer].stride(0), w.gate_up[layer].stride(0), w.down[layer].stride(0),
                keys.stride(0), keys.stride(1), keys.stride(2), workspace.n_splits, self.shape.scaling)
        constexprs = dict(self._constexprs(resid.dtype), CHUNK=workspace.chunk, MERGE_AHEAD=merge_ahead)
        if phased:
            for phase in range(PHASES):
                _layer_kernel[(programs or 1,)](*args, **constexprs, FIRST=phase, LAST=phase, BARRIER=False,
                                                **LAUNCH_OPTIONS)
            return
        if self.programs is None:
            self.programs = resident_programs(_layer_kernel, args, constexprs, resid.device)
            logger.info("Persistent Step1 layer kernel at batch %d: %d programs of %d warps", self.rows,
                        self.programs, PERSISTENT_WARPS)
        _layer_kernel[(self.programs,)](*args, **constexprs, FIRST=0, LAST=PHASES - 1, BARRIER=True,
                                        launch_cooperative_grid=True, **LAUNCH_OPTIONS)


def _driver() -> ctypes.CDLL:
    return ctypes.WinDLL("nvcuda.dll") if sys.platform == "win32" else ctypes.CDLL("libcuda.so.1")


def resident_programs(kernel, args: tuple, constexprs: dict, device: torch.device) -> int:
    """How many programs of the compiled ``kernel`` fit on the GPU at once (the driver's occupancy x SMs),
    capped at ``MAX_PROGRAMS_PER_SM`` per SM. Compiles the kernel without launching it."""
    compiled = kernel.warmup(*args, **constexprs, FIRST=0, LAST=PHASES - 1, BARRIER=True,
                             launch_cooperative_grid=True, grid=(1,), **LAUNCH_OPTIONS)
    compiled._init_handles()
    blocks = ctypes.c_int(0)
    status = _driver().cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(blocks), ctypes.c_void_p(compiled.function), ctypes.c_int(PERSISTENT_WARPS * 32),
        ctypes.c_size_t(compiled.metadata.shared))
    if status != 0 or blocks.value < 1:
        raise RuntimeError(f"the CUDA driver gave no occupancy for the persistent layer kernel (status {status})")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return sms * min(blocks.value, MAX_PROGRAMS_PER_SM)


def build(weights, rows: int, choice: dict, device: torch.device, dtype: torch.dtype) -> PersistentLayers:
    """The persistent layers of ``weights`` (``fused_weights.DecodeWeights``) for ``rows`` rows with the matmul
    configurations of ``choice`` (role -> ``decode_linears.LinearChoice``, as ``select_linears(..., "persistent")``
    returns)."""
    configs = LayerConfigs(*(tuple(choice[role].config[:2]) for role in ("qkv", "o", "gate_up", "down")))
    return PersistentLayers(rows, weights.shape, weights.embed.shape[1], weights.qkv[0].shape[0],
                            weights.down[0].shape[1], configs, device, dtype)


def run_layers(layers: PersistentLayers, weights, tokens: torch.Tensor, kv: list, kv_len: torch.Tensor,
               workspace: AttentionWorkspace, merge_ahead: bool = True) -> torch.Tensor:
    """A decode step's layers, one launch each: ids [rows] -> the final normed hidden [rows, C], the same value
    as ``DecodeSession._layers`` with these matmul configurations (the last norm is its kernel too)."""
    resid = F.embedding(tokens, weights.embed)
    for i in range(weights.num_layers):
        keys, values = kv[i]
        layers.run(i, resid, weights, keys[:layers.rows], values[:layers.rows], kv_len, workspace,
                   merge_ahead=merge_ahead)
    return triton_decode.add_rms_norm(resid, None, weights.final_norm, weights.eps)
