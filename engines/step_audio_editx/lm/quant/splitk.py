"""Split-K tensor-core kernel for interleaved int4 / int8 words: 1-16 rows, one ``tl.dot`` per k-step.

Why another kernel: ``interleaved.dot`` runs one ``tl.dot`` per field of a word tile (8 for int4), each
behind its own trip through shared memory (35 barriers per 256 columns, the PTX showed), and one program
per ``BLOCK_N`` rows streams the whole row: a 3,072-row matrix gets ~100 programs for 132 SMs, each waiting
on one tile's loads at a time. Here:

* the word tile is loaded as [BLOCK_N, groups, GW] and unpacked to all its fields at once, [BLOCK_N, groups,
  per_word, GW]: in the interleaved layout (field ``j`` of word ``w`` of a group is its column ``j * GW + w``)
  that is the k-step's columns in order, so ``x`` is one contiguous tile and a k-step is ONE ``tl.dot`` and
  one conversion to the operand layout;
* the next tile's words and scales are loaded before this tile is computed (two tiles in flight); or, with
  ``GATHER``, each element of a [BLOCK_K, BLOCK_N] tile loads the word and scale that hold it, so every op
  from the load to the dot is elementwise and Triton pipelines the loads into shared memory (no conversion
  of computed values; 8 times the words' bytes through shared memory);
* ``SPLIT`` programs share a block of rows, each over its own slice of the columns; each writes its float32
  partial sum and bumps the block's counter, and the program that arrives last adds the partials in split
  order (always the same order: the result does not depend on which program finished first), applies the
  residual add, stores, and resets the counter for the next call (or graph replay).

The weights are dequantized exactly as ``format.dequantize`` does (``(q - offset) * scale`` exact in float32,
rounded once to the activations' dtype), so the products are dequantize-then-matmul's; only the summation
order differs (tested to the same tolerance as every quantized kernel).
"""

from __future__ import annotations

import torch

from .. import triton_decode
from .format import QuantScheme, require_row_major

HAS_TRITON = triton_decode.HAS_TRITON
# (BLOCK_N, BLOCK_W, num_warps, num_stages, SPLIT[, MODE]): the decode session times these per role at 2-16
# rows. The fastest on the H200 (``bench/bench_quant_kernels.py``, 2026-12-04): of 22 tensor-core ones at
# 1 / 8 / 16 rows, q/k/v and o [64, 32, 4, 2, 4], gate_up [64, 32, 4, 2, 1], down [32, 16, 4, 3, 4, 1] then
# [32, 32, 4, 3, 8]; the CUDA-core ones at 2 rows (they lose from 4 rows on). The norm / SwiGLU stays outside
# (inside, every split would compute the row's norm again: slower each time).
CONFIGS: tuple[tuple[int, ...], ...] = (
    (64, 32, 4, 2, 4), (64, 32, 4, 2, 1), (32, 16, 4, 3, 4, 1), (32, 32, 4, 3, 8),
    (16, 32, 4, 1, 1, 2), (32, 32, 4, 1, 1, 2), (64, 16, 4, 1, 1, 2), (16, 64, 4, 1, 1, 2), (16, 32, 4, 1, 4, 2))
MAX_ROWS = triton_decode.MIN_DOT_ROWS  # rows per call; also the tensor-core modes' M block (tl.dot's smallest)
TILE_AHEAD, GATHER, CUDA_CORES = 0, 1, 2  # a configuration's optional 6th number (MODE): see the module doc
_WORKSPACES: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor]]] = {}

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ..triton_decode import _prologue, _rows_and_factor, _store_out
    from .interleaved import _il_tile, _unit_field
    from .kernels import _centered

    K_TILE_AHEAD, K_GATHER, K_CUDA_CORES = tl.constexpr(TILE_AHEAD), tl.constexpr(GATHER), tl.constexpr(CUDA_CORES)

    @triton.jit
    def _tile(p_ptr, s_ptr, rn, nmask, w0, stride_p, stride_s, NG: tl.constexpr, GW: tl.constexpr):
        """The words of groups ``w0 / GW ..`` as [BLOCK_N, NG, GW] and their scales [BLOCK_N, NG] (rows past N
        read zeros)."""
        g = w0 // GW + tl.arange(0, NG)
        wi = g[:, None] * GW + tl.arange(0, GW)[None, :]
        words = tl.load(p_ptr + rn[:, None, None] * stride_p + wi[None, :, :], mask=nmask[:, None, None], other=0)
        s = tl.load(s_ptr + rn[:, None] * stride_s + g[None, :], mask=nmask[:, None], other=0.0)
        return words, s

    @triton.jit
    def _dequantized(words, s, BITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     dtype: tl.constexpr):
        """Every field of ``words`` [BLOCK_N, NG, GW] as weights [BLOCK_N, BLOCK_K] in column order (field ``j``
        of word ``w`` of a group is its column ``j * GW + w``), rounded once from the exact float32
        ``(q - offset) * scale`` (``format.dequantize``'s values)."""
        PER: tl.constexpr = 32 // BITS
        shifts = tl.arange(0, PER) * BITS
        fields = (words[:, :, None, :] >> shifts[None, None, :, None]) & ((1 << BITS) - 1)
        q = _centered(fields, BITS)
        w = (q * s.to(tl.float32)[:, :, None, None]).to(dtype)
        return tl.reshape(w, (BLOCK_N, BLOCK_K))

    @triton.jit
    def _gathered(p_ptr, s_ptr, rn, nmask, w0, stride_p, stride_s, BITS: tl.constexpr, GROUP: tl.constexpr,
                  BLOCK_K: tl.constexpr, dtype: tl.constexpr):
        """The weights [BLOCK_K, BLOCK_N] of the k-step at word ``w0`` (column order), each element loading the
        word (and scale) that holds it: every op from the load to the dot is elementwise."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        kk = tl.arange(0, BLOCK_K)
        c = kk % GROUP
        wi = w0 + (kk // GROUP) * GW + c % GW
        words = tl.load(p_ptr + rn[None, :] * stride_p + wi[:, None], mask=nmask[None, :], other=0)
        s = tl.load(s_ptr + rn[None, :] * stride_s + (wi // GW)[:, None], mask=nmask[None, :], other=0.0)
        fields = (words >> ((c // GW) * BITS)[:, None]) & ((1 << BITS) - 1)
        q = _centered(fields, BITS)
        return (q * s.to(tl.float32)).to(dtype)

    @triton.jit
    def _fma_step(acc, x_ptr, rm, mmask, stride_x, words, s, wi, BITS: tl.constexpr, GROUP: tl.constexpr):
        """``acc`` [BLOCK_M, BLOCK_N, BLOCK_W] += x * w for one word tile on CUDA cores: each field ``j`` as
        ``1 + q / 2^BITS`` (a shift and an AND-OR) times the x columns it holds, the offset and the scale applied
        once per word (``interleaved.gemv``'s arithmetic, with rows)."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        part = tl.zeros(acc.shape, tl.float32)
        xs = tl.zeros([acc.shape[0], 1, acc.shape[2]], tl.float32)
        for j in tl.static_range(PER):
            col = (wi // GW) * GROUP + j * GW + wi % GW
            a = tl.load(x_ptr + rm[:, None] * stride_x + col[None, :], mask=mmask[:, None], other=0.0)
            a = a.to(tl.float32)[:, None, :]
            part += _unit_field(words, j, BITS)[None, :, :] * a
            xs += a
        return acc + s.to(tl.float32)[None, :, :] * (part - 1.5 * xs)

    @triton.jit(do_not_specialize=["M"])
    def _splitk_kernel(x_ptr, p_ptr, s_ptr, out_ptr, norm_ptr, part_ptr, counter_ptr, M, N, K, SPAN, eps, stride_x,
                       stride_p, stride_s, stride_out, BITS: tl.constexpr, GROUP: tl.constexpr,
                       PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_W: tl.constexpr, SPLIT: tl.constexpr, PRECISION: tl.constexpr,
                       MODE: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ dequant(W)[N, K]^T; program ``(i, k)`` reads words ``k * SPAN ..`` of its
        rows (SPAN: the words per row / SPLIT, a multiple of BLOCK_W)."""
        PER: tl.constexpr = 32 // BITS
        GW: tl.constexpr = GROUP // PER
        BLOCK_K: tl.constexpr = BLOCK_W * PER
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = rn < N
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
        tl.static_assert(MODE != K_CUDA_CORES or PROLOGUE == 0, "the CUDA-core mode takes x as it is")
        NG: tl.constexpr = BLOCK_W // GW  # whole groups per k-step
        w_first = pid_k * SPAN
        if MODE == K_TILE_AHEAD:
            words_next, s_next = _tile(p_ptr, s_ptr, rn, nmask, w_first, stride_p, stride_s, NG, GW)
        if MODE == K_CUDA_CORES:
            words_next, s_next = _il_tile(p_ptr, s_ptr, rn, nmask, w_first + tl.arange(0, BLOCK_W), SPAN * SPLIT,
                                          stride_p, stride_s, GW)
            acc3 = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_W], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for step in range(0, SPAN, BLOCK_W):
            w0 = w_first + step
            if MODE == K_CUDA_CORES:
                words, s = words_next, s_next
                wi = w0 + tl.arange(0, BLOCK_W)
                if step + BLOCK_W < SPAN:
                    words_next, s_next = _il_tile(p_ptr, s_ptr, rn, nmask, wi + BLOCK_W, SPAN * SPLIT, stride_p,
                                                  stride_s, GW)
                acc3 = _fma_step(acc3, x_ptr, rm, mmask, stride_x, words, s, wi, BITS, GROUP)
            else:
                if MODE == K_TILE_AHEAD:
                    words, s = words_next, s_next
                    if step + BLOCK_W < SPAN:
                        words_next, s_next = _tile(p_ptr, s_ptr, rn, nmask, w0 + BLOCK_W, stride_p, stride_s, NG,
                                                   GW)
                rk = w0 * PER + tl.arange(0, BLOCK_K)
                offs = rm[:, None] * stride_x + rk[None, :]
                xmask = mmask[:, None] & (rk[None, :] < K)
                a = tl.load(x_ptr + offs, mask=xmask, other=0.0)
                a = _prologue(a, x_ptr, offs, rk[None, :], xmask, factor, norm_ptr, K, PROLOGUE)
                if MODE == K_GATHER:
                    acc += tl.dot(a, _gathered(p_ptr, s_ptr, rn, nmask, w0, stride_p, stride_s, BITS, GROUP,
                                               BLOCK_K, a.dtype), input_precision=PRECISION)
                else:
                    w = _dequantized(words, s, BITS, BLOCK_N, BLOCK_K, a.dtype)
                    acc += tl.dot(a, tl.trans(w), input_precision=PRECISION)
        if MODE == K_CUDA_CORES:
            acc = tl.sum(acc3, 2) * (1 << BITS)
        _store_split(acc, out_ptr, part_ptr, counter_ptr, rm, rn, mmask, nmask, pid_n, pid_k, N, stride_out,
                     BLOCK_M, BLOCK_N, SPLIT, RESIDUAL)

    @triton.jit
    def _store_split(acc, out_ptr, part_ptr, counter_ptr, rm, rn, mmask, nmask, pid_n, pid_k, N, stride_out,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, RESIDUAL: tl.constexpr):
        """Store program ``(pid_n, pid_k)``'s float32 sum ``acc`` [BLOCK_M, BLOCK_N]: directly when SPLIT is 1;
        else as a partial, and the program of the block that arrives last adds the partials in split order
        (the result does not depend on which finished first), stores, and resets the block's counter."""
        offs_out = rm[:, None] * stride_out + rn[None, :]
        omask = mmask[:, None] & nmask[None, :]
        if SPLIT == 1:
            _store_out(out_ptr, offs_out, omask, acc.to(out_ptr.dtype.element_ty), RESIDUAL)
        else:
            tile = rm[:, None] * N + rn[None, :]
            tl.store(part_ptr + pid_k * BLOCK_M * N + tile, acc, mask=omask)
            tl.debug_barrier()  # every thread's partial is written before the counter says so
            arrived = tl.atomic_add(counter_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLIT - 1:  # the last program of this block of rows: sum in split order
                total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for k in tl.static_range(SPLIT):
                    total += tl.load(part_ptr + k * BLOCK_M * N + tile, mask=omask, other=0.0,
                                     cache_modifier=".cg")
                _store_out(out_ptr, offs_out, omask, total.to(out_ptr.dtype.element_ty), RESIDUAL)
                tl.store(counter_ptr + pid_n, 0)


def _workspace(device: torch.device, partials: int, counters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 partial sums and zeroed int32 counters, shared by every call on ``device`` (calls run one
    after another on a stream; each leaves its counters at zero). A larger one is made outside graph capture
    only (a decode session runs its step before capturing it), and a replaced one is kept alive: a graph
    captured earlier still reads it."""
    held = _WORKSPACES.get(device)
    if held and held[-1][0].numel() >= partials and held[-1][1].numel() >= counters:
        return held[-1]
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError("the split-K workspace must be sized by a call before CUDA graph capture")
    size_p = max(partials, held[-1][0].numel() if held else 0)
    size_c = max(counters, held[-1][1].numel() if held else 0)
    made = (torch.empty(size_p, dtype=torch.float32, device=device),
            torch.zeros(size_c, dtype=torch.int32, device=device))
    _WORKSPACES.setdefault(device, []).append(made)
    return made


def fits(words: int, scheme: QuantScheme, config: tuple[int, ...]) -> bool:
    """True when rows of ``words`` words split into ``SPLIT`` slices of ``BLOCK_W``-word tiles of whole
    groups."""
    _, block_w, _, _, split, *_ = config
    return words % (block_w * split) == 0 and block_w % scheme.words_per_group == 0


def splitk_dot(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, scheme: QuantScheme,
               config: tuple[int, ...], norm_weight: torch.Tensor | None = None, eps: float = 0.0,
               swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``f(x) @ W^T`` for 1-16 rows of interleaved words (arguments as ``interleaved.dot``); config
    (BLOCK_N, BLOCK_W, num_warps, num_stages, SPLIT)."""
    block_n, block_w, warps, stages, split, *rest = config
    n, words = packed.shape
    rows = x.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"the split-K kernel runs at most {MAX_ROWS} rows, got {rows}")
    if not fits(words, scheme, config):
        raise ValueError(f"{words} words per row do not split into {split} x blocks of {block_w} whole groups")
    require_row_major(packed, scale)
    mode = rest[0] if rest else TILE_AHEAD
    if mode == CUDA_CORES and (norm_weight is not None or swiglu):
        raise ValueError("the CUDA-core mode runs no norm / SwiGLU prologue")
    block_m = triton_decode._pow2(rows) if mode == CUDA_CORES else MAX_ROWS
    blocks = triton.cdiv(n, block_n)
    part, counter = _workspace(x.device, split * MAX_ROWS * n if split > 1 else 1, blocks)
    out = residual if residual is not None else torch.empty(rows, n, dtype=x.dtype, device=x.device)
    _splitk_kernel[(blocks, split)](
        x, packed, scale, out, norm_weight if norm_weight is not None else scale, part, counter, rows, n,
        words * scheme.per_word, words // split, eps, x.stride(0), packed.stride(0), scale.stride(0), out.stride(0),
        BITS=scheme.bits, GROUP=scheme.group_size, PROLOGUE=triton_decode.prologue_code(norm_weight, swiglu),
        RESIDUAL=residual is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_W=block_w, SPLIT=split,
        PRECISION=triton_decode._precision(x.dtype), MODE=mode, num_warps=warps,
        num_stages=stages,
    )
    return out
