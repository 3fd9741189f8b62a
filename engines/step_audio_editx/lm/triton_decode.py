"""Fused CUDA kernels (Triton) for the Step1 decode step: the GPU side of ``decode_ops``.

Why: a decode step at batch <= 16 is bound by reading the weights (6.6 GB) and by the number of kernels
(~300 per step even inside a CUDA graph). These kernels fuse what plain torch runs as many small
launches, with the rounding points of the reference so the results agree with the plain path:

* ``add_rms_norm``: residual add + RMSNorm in one pass per row; ``silu_mul``: SwiGLU's product.
* ``decode_attention``: flash-decoding for one query per row with sqrt-ALiBi computed in the kernel
  (``-slope * sqrt(distance)``, rounded to the activation dtype like the model's dense bias), GQA packing
  (the H/G query heads of a group share each loaded key tile), the new key/value written into the static
  cache, and split-K over fixed chunks of the cache: a chunk past a row's length returns at once, so one
  captured graph serves every length up to the cache size. The last chunk program of a (row, group) to
  finish merges the partial results (an atomic counter), so attention is one launch per layer.
* ``skinny_linear`` (tensor cores, 1-16 rows) and ``gemv`` (CUDA cores, one row): ``x @ W^T`` that can
  normalise x first (RMSNorm), form SwiGLU's product on the fly, and add into the residual in place. The
  session times them against cuBLAS per matrix inside CUDA graphs and keeps the fastest.
* The sampler (guard, constraint, noise, argmax, bookkeeping in one launch) is ``triton_sampler``.

Every launcher takes torch tensors and returns torch tensors; nothing here syncs with the host, so all of
it can be captured in a CUDA graph (after one eager call has compiled the kernels). With ``pdl=True`` a
launcher starts its kernel as a programmatic dependent of the previous one (``triton_pdl``: prefetch,
wait, the same code; bit-identical results).
"""

from __future__ import annotations

import logging

import torch

from ..triton_import import HAS_TRITON, tl, triton
from ..triton_import import device_math as _math
from . import triton_pdl
from .decode_ops import AttentionShape

logger = logging.getLogger(__name__)

# Attention: keys per split-K chunk, and per inner tile.
ATTN_BLOCK_N = 64
ATTN_CHUNK_SMALL_BATCH = 128  # few (row, group) pairs: smaller chunks give more parallel programs
ATTN_CHUNK_LARGE_BATCH = 256
ATTN_LARGE_BATCH_PAIRS = 16  # (rows x KV groups) from which the larger chunk is used
MIN_DOT_ROWS = 16  # tl.dot needs at least 16 rows
SILU_BLOCK = 1024


def available() -> bool:
    return HAS_TRITON and torch.cuda.is_available()


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def attention_chunk(batch: int, groups: int) -> int:
    """Keys per split-K chunk for a batch bucket (fixed per captured graph)."""
    return ATTN_CHUNK_LARGE_BATCH if batch * groups >= ATTN_LARGE_BATCH_PAIRS else ATTN_CHUNK_SMALL_BATCH


if HAS_TRITON:

    # --- norms and SwiGLU -------------------------------------------------------------------------

    @triton.jit
    def _add_rms_norm_kernel(resid_ptr, delta_ptr, weight_ptr, out_ptr, n_cols, eps,
                             stride_resid, stride_delta, stride_out,
                             HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            triton_pdl.enter()
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(resid_ptr + row * stride_resid + cols, mask=mask, other=0.0)
        if HAS_DELTA:
            d = tl.load(delta_ptr + row * stride_delta + cols, mask=mask, other=0.0)
            x = (x.to(tl.float32) + d.to(tl.float32)).to(x.dtype)
            tl.store(resid_ptr + row * stride_resid + cols, x, mask=mask)
        xf = x.to(tl.float32)
        variance = tl.sum(xf * xf, axis=0) / n_cols
        factor = _math.rsqrt(variance + eps).to(x.dtype).to(tl.float32)
        y = (xf * factor).to(x.dtype)
        w = tl.load(weight_ptr + cols, mask=mask, other=0.0)
        y = (y.to(tl.float32) * w.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + row * stride_out + cols, y, mask=mask)

    @triton.jit
    def _silu(g):
        """torch's SiLU of a low-precision tensor: computed in float32, rounded once."""
        gf = g.to(tl.float32)
        return (gf / (1.0 + _math.exp(-gf))).to(g.dtype)

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, n_inner, stride_gu, stride_out, BLOCK: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            triton_pdl.enter()
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n_inner
        g = tl.load(gu_ptr + row * stride_gu + cols, mask=mask, other=0.0)
        u = tl.load(gu_ptr + row * stride_gu + n_inner + cols, mask=mask, other=0.0)
        y = (_silu(g).to(tl.float32) * u.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + row * stride_out + cols, y, mask=mask)

    # --- attention --------------------------------------------------------------------------------

    @triton.jit
    def _merge_load(part_o_ptr, part_ml_ptr, slots, s, n_valid, d, hmask, hdmask, DIM: tl.constexpr):
        """Partial ``s`` of a merge: (m, l, o, valid); past ``n_valid`` nothing is read and ``valid`` is False."""
        valid = s < n_valid
        slot = slots + s
        m_s = tl.load(part_ml_ptr + slot * 2, mask=hmask & valid, other=float("-inf"), cache_modifier=".cg")
        l_s = tl.load(part_ml_ptr + slot * 2 + 1, mask=hmask & valid, other=0.0, cache_modifier=".cg")
        o_s = tl.load(part_o_ptr + slot[:, None] * DIM + d[None, :], mask=hdmask & valid, other=0.0,
                      cache_modifier=".cg")
        return m_s, l_s, o_s, valid

    @triton.jit
    def _merge_fold(m_i, l_i, acc, m_s, l_s, o_s, valid):
        """Fold one partial into the running (max, sum, output); an invalid one leaves all three untouched.
        The fused multiply-adds are spelled out: left to the compiler, ``x * a + y * c`` fuses either product
        depending on the code around it (one bit apart); this is the rounding of the one-at-a-time loop."""
        m_new = tl.maximum(m_i, m_s)
        a = tl.exp(m_i - m_new)
        c = tl.exp(m_s - m_new)
        l_new = tl.fma(l_i, a, l_s * c)
        acc_new = tl.fma(acc, a[:, None], o_s * c[:, None])
        return (tl.where(valid, m_new, m_i), tl.where(valid, l_new, l_i), tl.where(valid, acc_new, acc))

    @triton.jit
    def _attn_merge(b, g, cur, qkv_row, part_o_ptr, part_ml_ptr, out_ptr, stride_out, n_splits, scale,
                    HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                    QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr, AHEAD: tl.constexpr):
        """Merge the chunk partials of (row b, group g) with the new token's own term; write [QH, D]. The
        partials are folded one after another in split order. AHEAD: each one's loads are issued four
        partials early (otherwise every fold waits for an L2 round trip); the arithmetic is the same."""
        d = tl.arange(0, DIM_PAD)
        dmask = d < DIM
        hq = tl.arange(0, QH_PAD)
        hmask = hq < QH
        hdmask = hmask[:, None] & dmask[None, :]
        heads = g * QH + hq
        q = tl.load(qkv_row + heads[:, None] * DIM + d[None, :], mask=hdmask, other=0.0).to(tl.float32)
        k_new = tl.load(qkv_row + HEADS * DIM + g * DIM + d, mask=dmask, other=0.0).to(tl.float32)
        v_new = tl.load(qkv_row + (HEADS + GROUPS) * DIM + g * DIM + d, mask=dmask, other=0.0).to(tl.float32)
        m_i = tl.sum(q * k_new[None, :], 1) * scale  # the new token: distance 0, bias 0
        l_i = tl.full([QH_PAD], 1.0, tl.float32)
        acc = tl.zeros([QH_PAD, DIM_PAD], tl.float32) + v_new[None, :]
        n_valid = (tl.maximum(cur, 0) + CHUNK - 1) // CHUNK
        slots = (b * HEADS + heads) * n_splits
        if AHEAD:  # the next four partials are in flight while the current four are folded
            m0, l0, o0, v0 = _merge_load(part_o_ptr, part_ml_ptr, slots, 0, n_valid, d, hmask, hdmask, DIM)
            m1, l1, o1, v1 = _merge_load(part_o_ptr, part_ml_ptr, slots, 1, n_valid, d, hmask, hdmask, DIM)
            m2, l2, o2, v2 = _merge_load(part_o_ptr, part_ml_ptr, slots, 2, n_valid, d, hmask, hdmask, DIM)
            m3, l3, o3, v3 = _merge_load(part_o_ptr, part_ml_ptr, slots, 3, n_valid, d, hmask, hdmask, DIM)
            for s in range(0, n_valid, 4):
                n0, k0, p0, w0 = _merge_load(part_o_ptr, part_ml_ptr, slots, s + 4, n_valid, d, hmask, hdmask, DIM)
                n1, k1, p1, w1 = _merge_load(part_o_ptr, part_ml_ptr, slots, s + 5, n_valid, d, hmask, hdmask, DIM)
                n2, k2, p2, w2 = _merge_load(part_o_ptr, part_ml_ptr, slots, s + 6, n_valid, d, hmask, hdmask, DIM)
                n3, k3, p3, w3 = _merge_load(part_o_ptr, part_ml_ptr, slots, s + 7, n_valid, d, hmask, hdmask, DIM)
                m_i, l_i, acc = _merge_fold(m_i, l_i, acc, m0, l0, o0, v0)
                m_i, l_i, acc = _merge_fold(m_i, l_i, acc, m1, l1, o1, v1)
                m_i, l_i, acc = _merge_fold(m_i, l_i, acc, m2, l2, o2, v2)
                m_i, l_i, acc = _merge_fold(m_i, l_i, acc, m3, l3, o3, v3)
                m0, l0, o0, v0 = n0, k0, p0, w0
                m1, l1, o1, v1 = n1, k1, p1, w1
                m2, l2, o2, v2 = n2, k2, p2, w2
                m3, l3, o3, v3 = n3, k3, p3, w3
        else:  # the path before the look-ahead: each partial loaded when its turn comes
            for s in range(0, n_valid):
                slot = (b * HEADS + heads) * n_splits + s
                m_s = tl.load(part_ml_ptr + slot * 2, mask=hmask, other=0.0, cache_modifier=".cg")
                l_s = tl.load(part_ml_ptr + slot * 2 + 1, mask=hmask, other=0.0, cache_modifier=".cg")
                o_s = tl.load(part_o_ptr + slot[:, None] * DIM + d[None, :], mask=hdmask, other=0.0,
                              cache_modifier=".cg")
                m_new = tl.maximum(m_i, m_s)
                a = tl.exp(m_i - m_new)
                c = tl.exp(m_s - m_new)
                l_i = l_i * a + l_s * c
                acc = acc * a[:, None] + o_s * c[:, None]
                m_i = m_new
        out = acc / l_i[:, None]
        tl.store(out_ptr + b * stride_out + heads[:, None] * DIM + d[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=hdmask)

    @triton.jit
    def _attn_split_kernel(qkv_ptr, k_ptr, v_ptr, kv_len_ptr, slopes_ptr, part_o_ptr, part_ml_ptr, out_ptr,
                           counter_ptr, stride_qkv, stride_kb, stride_kg, stride_kl, stride_out, n_splits, scale,
                           HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                           QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr,
                           BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, FUSED_MERGE: tl.constexpr,
                           PDL: tl.constexpr, DIM_LINES: tl.constexpr, LINE: tl.constexpr,
                           MERGE_AHEAD: tl.constexpr):
        pair = tl.program_id(0)
        split = tl.program_id(1)
        b = pair // GROUPS
        g = pair % GROUPS
        if PDL:
            triton_pdl.enter_kv(k_ptr + b * stride_kb + g * stride_kg, v_ptr + b * stride_kb + g * stride_kg,
                                kv_len_ptr, b, split, stride_kl, DIM, CHUNK, DIM_LINES, LINE)
        kv_len = tl.load(kv_len_ptr + b)
        cur = kv_len - 1  # slot of the new token; cached keys are slots [0, cur)
        d = tl.arange(0, DIM_PAD)
        dmask = d < DIM
        hq = tl.arange(0, QH_PAD)
        hmask = hq < QH
        heads = g * QH + hq
        qkv_row = qkv_ptr + b * stride_qkv
        k_base = k_ptr + b * stride_kb + g * stride_kg
        v_base = v_ptr + b * stride_kb + g * stride_kg
        n_parts = tl.maximum((cur + CHUNK - 1) // CHUNK, 1)  # programs that report to the merge
        if kv_len <= 0:
            if FUSED_MERGE:
                if split == 0:  # a row that does not run: zeros, no merge
                    zero = tl.zeros([QH_PAD, DIM_PAD], tl.float32).to(out_ptr.dtype.element_ty)
                    tl.store(out_ptr + b * stride_out + heads[:, None] * DIM + d[None, :], zero,
                             mask=hmask[:, None] & dmask[None, :])
        elif split < n_parts:
            if split == 0:  # nobody in this launch reads slot `cur`: the merge uses the registers' copy
                k_new = tl.load(qkv_row + HEADS * DIM + g * DIM + d, mask=dmask)
                v_new = tl.load(qkv_row + (HEADS + GROUPS) * DIM + g * DIM + d, mask=dmask)
                tl.store(k_base + cur * stride_kl + d, k_new, mask=dmask)
                tl.store(v_base + cur * stride_kl + d, v_new, mask=dmask)
            start = split * CHUNK
            if start < cur:
                q = tl.load(qkv_row + heads[:, None] * DIM + d[None, :], mask=hmask[:, None] & dmask[None, :],
                            other=0.0)
                slope = tl.load(slopes_ptr + heads, mask=hmask, other=0.0)
                m_i = tl.full([QH_PAD], float("-inf"), tl.float32)
                l_i = tl.zeros([QH_PAD], tl.float32)
                acc = tl.zeros([QH_PAD, DIM_PAD], tl.float32)
                end = tl.minimum(start + CHUNK, cur)
                for n0 in range(start, end, BLOCK_N):
                    offs = n0 + tl.arange(0, BLOCK_N)
                    nmask = offs < end
                    kvmask = nmask[:, None] & dmask[None, :]
                    k = tl.load(k_base + offs[:, None] * stride_kl + d[None, :], mask=kvmask, other=0.0)
                    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
                    root = tl.sqrt((cur - offs).to(tl.float32))
                    bias = (-slope[:, None] * root[None, :]).to(k.dtype).to(tl.float32)
                    s = tl.where(nmask[None, :], s + bias, float("-inf"))
                    m_new = tl.maximum(m_i, tl.max(s, 1))
                    alpha = tl.exp(m_i - m_new)
                    p = tl.exp(s - m_new[:, None])
                    l_i = l_i * alpha + tl.sum(p, 1)
                    v = tl.load(v_base + offs[:, None] * stride_kl + d[None, :], mask=kvmask, other=0.0)
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                    m_i = m_new
                if PDL:
                    triton_pdl.release()
                slot = (b * HEADS + heads) * n_splits + split
                tl.store(part_o_ptr + slot[:, None] * DIM + d[None, :], acc, mask=hmask[:, None] & dmask[None, :])
                tl.store(part_ml_ptr + slot * 2, m_i, mask=hmask)
                tl.store(part_ml_ptr + slot * 2 + 1, l_i, mask=hmask)
            if FUSED_MERGE:
                done = tl.atomic_add(counter_ptr + pair, 1)  # acq_rel: the partials above are published
                if done == n_parts - 1:  # the last reporter merges and re-arms the counter
                    _attn_merge(b, g, cur, qkv_row, part_o_ptr, part_ml_ptr, out_ptr, stride_out, n_splits, scale,
                                HEADS, GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK, MERGE_AHEAD)
                    tl.store(counter_ptr + pair, 0)

    @triton.jit
    def _attn_merge_kernel(qkv_ptr, kv_len_ptr, part_o_ptr, part_ml_ptr, out_ptr,
                           stride_qkv, stride_out, n_splits, scale,
                           HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                           QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr, MERGE_AHEAD: tl.constexpr):
        pair = tl.program_id(0)
        b = pair // GROUPS
        g = pair % GROUPS
        kv_len = tl.load(kv_len_ptr + b)
        if kv_len > 0:
            _attn_merge(b, g, kv_len - 1, qkv_ptr + b * stride_qkv, part_o_ptr, part_ml_ptr, out_ptr, stride_out,
                        n_splits, scale, HEADS, GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK, MERGE_AHEAD)
        else:
            d = tl.arange(0, DIM_PAD)
            hq = tl.arange(0, QH_PAD)
            heads = g * QH + hq
            zero = tl.zeros([QH_PAD, DIM_PAD], tl.float32).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + b * stride_out + heads[:, None] * DIM + d[None, :], zero,
                     mask=(hq < QH)[:, None] & (d < DIM)[None, :])

    # --- matmuls for a few rows -------------------------------------------------------------------

    @triton.jit
    def _prologue(a, x_ptr, offs, rk, kmask, factor, norm_ptr, K, PROLOGUE: tl.constexpr):
        """The GEMM input tile: x (0), RMSNorm(x) * norm (1), or SwiGLU of x = [gate | up] (2)."""
        if PROLOGUE == 1:
            f = factor.to(a.dtype).to(tl.float32)
            a = (a.to(tl.float32) * f).to(a.dtype)
            nw = tl.load(norm_ptr + rk, mask=kmask, other=0.0)
            a = (a.to(tl.float32) * nw.to(tl.float32)).to(nw.dtype)
        if PROLOGUE == 2:
            u = tl.load(x_ptr + offs + K, mask=kmask, other=0.0)
            a = (_silu(a).to(tl.float32) * u.to(tl.float32)).to(u.dtype)
        return a

    @triton.jit
    def _rms_factor(x_ptr, K, eps, BLOCK_K: tl.constexpr, AHEAD: tl.constexpr = 0):
        """1 / RMS of one row x[K] (float32 sum of squares over BLOCK_K-wide tiles): RMSNorm's scale. AHEAD:
        each tile's load is issued one iteration early (the same sums in the same order)."""
        sq = tl.zeros([BLOCK_K], tl.float32)
        if AHEAD:
            nxt = tl.load(x_ptr + tl.arange(0, BLOCK_K), mask=tl.arange(0, BLOCK_K) < K, other=0.0)
        for k0 in range(0, K, BLOCK_K):
            if AHEAD:
                xk = nxt.to(tl.float32)
                rk = k0 + BLOCK_K + tl.arange(0, BLOCK_K)
                nxt = tl.load(x_ptr + rk, mask=rk < K, other=0.0)
            else:
                rk = k0 + tl.arange(0, BLOCK_K)
                xk = tl.load(x_ptr + rk, mask=rk < K, other=0.0).to(tl.float32)
            sq += xk * xk
        return _math.rsqrt(tl.sum(sq, 0) / K + eps)

    @triton.jit
    def _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_K: tl.constexpr):
        """A tensor-core matmul's rows of x (``rm``, ``rm < M``) and, for the RMSNorm prologue, their
        ``_rms_factor_rows`` (else zeros)."""
        rm = tl.arange(0, BLOCK_M)
        mmask = rm < M
        factor = tl.zeros([BLOCK_M, 1], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor_rows(x_ptr, rm, mmask, stride_x, K, eps, BLOCK_M, BLOCK_K)
        return rm, mmask, factor

    @triton.jit
    def _rms_factor_rows(x_ptr, rm, mmask, stride_x, K, eps, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """``_rms_factor`` of rows ``rm`` of x[M, K], as a [BLOCK_M, 1] column."""
        sq = tl.zeros([BLOCK_M], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :],
                         mask=mmask[:, None] & (rk[None, :] < K), other=0.0).to(tl.float32)
            sq += tl.sum(xk * xk, 1)
        return _math.rsqrt(sq / K + eps)[:, None]

    @triton.jit
    def _store_out(out_ptr, offs, mask, out, RESIDUAL: tl.constexpr):
        """Store a matmul result (in the output's dtype) at ``offs``; RESIDUAL adds it to what is there first
        (float32 sum, one rounding): the in-place residual add of the o and down projections."""
        if RESIDUAL:
            r = tl.load(out_ptr + offs, mask=mask, other=0.0)
            out = (out.to(tl.float32) + r.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offs, out, mask=mask)

    @triton.jit(do_not_specialize=["M"])  # one binary for every batch bucket
    def _skinny_linear_kernel(x_ptr, w_ptr, out_ptr, norm_ptr, M, N, K, eps, stride_x, stride_w, stride_out,
                              PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr,
                              PRECISION: tl.constexpr, PDL: tl.constexpr, LINE: tl.constexpr):
        """out[M, N] (+)= f(x)[M, K] @ W[N, K]^T on tensor cores (M <= BLOCK_M). RESIDUAL adds into out."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        if PDL:
            triton_pdl.enter_rows(w_ptr, rn, N, K, stride_w, BLOCK_N, BLOCK_K, LINE)
        nmask = rn < N
        rm, mmask, factor = _rows_and_factor(x_ptr, M, stride_x, K, eps, PROLOGUE, BLOCK_M, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < K
            offs = rm[:, None] * stride_x + rk[None, :]
            xmask = mmask[:, None] & kmask[None, :]
            a = tl.load(x_ptr + offs, mask=xmask, other=0.0)
            a = _prologue(a, x_ptr, offs, rk[None, :], xmask, factor, norm_ptr, K, PROLOGUE)
            if EVEN:
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :])
            else:
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :], mask=nmask[:, None] & kmask[None, :],
                            other=0.0)
            acc += tl.dot(a.to(w.dtype), tl.trans(w), input_precision=PRECISION)
        if PDL:
            triton_pdl.release()
        _store_out(out_ptr, rm[:, None] * stride_out + rn[None, :], mmask[:, None] & nmask[None, :],
                   acc.to(out_ptr.dtype.element_ty), RESIDUAL)

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, out_ptr, norm_ptr, N, K, eps, stride_w,
                     PROLOGUE: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, EVEN: tl.constexpr, PDL: tl.constexpr, LINE: tl.constexpr):
        """out[N] (+)= f(x)[K] @ W[N, K]^T for ONE row on CUDA cores: W streamed in [BLOCK_N, BLOCK_K] tiles,
        float32 products accumulated per lane and reduced once at the end."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        if PDL:
            triton_pdl.enter_rows(w_ptr, rn, N, K, stride_w, BLOCK_N, BLOCK_K, LINE)
        nmask = rn < N
        factor = tl.zeros([], tl.float32)
        if PROLOGUE == 1:
            factor = _rms_factor(x_ptr, K, eps, BLOCK_K)
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            kmask = rk < K
            if EVEN:
                a = tl.load(x_ptr + rk)
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :])
            else:
                a = tl.load(x_ptr + rk, mask=kmask, other=0.0)
                w = tl.load(w_ptr + rn[:, None] * stride_w + rk[None, :], mask=nmask[:, None] & kmask[None, :],
                            other=0.0)
            a = _prologue(a, x_ptr, rk, rk, kmask, factor, norm_ptr, K, PROLOGUE)
            acc += w.to(tl.float32) * a.to(tl.float32)[None, :]
        if PDL:
            triton_pdl.release()
        out = tl.sum(acc, 1).to(out_ptr.dtype.element_ty)
        _store_out(out_ptr, rn, nmask, out, RESIDUAL)

def _pdl(pdl: bool) -> dict:
    """The kernel flag and the launch option of a programmatic dependent launch (``triton_pdl``)."""
    return {"PDL": True, "launch_pdl": True} if pdl else {"PDL": False}


def prologue_code(norm_weight: torch.Tensor | None, swiglu: bool) -> int:
    """The matmul kernels' PROLOGUE: RMSNorm (1), SwiGLU product (2) or x as it is (0); see ``_prologue``."""
    return 1 if norm_weight is not None else (2 if swiglu else 0)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def add_rms_norm(resid: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 pdl: bool = False) -> torch.Tensor:
    """``resid += delta`` in place (when given), then RMSNorm(resid) * weight; [B, C] -> [B, C]."""
    rows, cols = resid.shape
    out = torch.empty_like(resid)
    _add_rms_norm_kernel[(rows,)](
        resid, delta if delta is not None else resid, weight, out, cols, eps,
        resid.stride(0), delta.stride(0) if delta is not None else 0, out.stride(0),
        HAS_DELTA=delta is not None, BLOCK=_pow2(cols), num_warps=8 if cols >= 2048 else 4, **_pdl(pdl),
    )
    return out


def silu_mul(gate_up: torch.Tensor, pdl: bool = False) -> torch.Tensor:
    rows, width = gate_up.shape
    inner = width // 2
    out = torch.empty(rows, inner, dtype=gate_up.dtype, device=gate_up.device)
    _silu_mul_kernel[(rows, triton.cdiv(inner, SILU_BLOCK))](gate_up, out, inner, gate_up.stride(0), out.stride(0),
                                                             BLOCK=SILU_BLOCK, num_warps=4, **_pdl(pdl))
    return out


class AttentionWorkspace:
    """Split-K partial results and merge counters for one batch bucket and cache length (shared by layers)."""

    def __init__(self, batch: int, shape: AttentionShape, cache_length: int, device: torch.device) -> None:
        self.chunk = attention_chunk(batch, shape.num_groups)
        self.n_splits = triton.cdiv(cache_length, self.chunk)
        self.part_o = torch.empty(batch, shape.num_heads, self.n_splits, shape.head_dim, dtype=torch.float32,
                                  device=device)
        self.part_ml = torch.empty(batch, shape.num_heads, self.n_splits, 2, dtype=torch.float32, device=device)
        self.counters = torch.zeros(batch * shape.num_groups, dtype=torch.int32, device=device)


def decode_attention(qkv: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, kv_len: torch.Tensor,
                     slopes: torch.Tensor, shape: AttentionShape, workspace: AttentionWorkspace,
                     fused_merge: bool = True, pdl: bool = False, merge_ahead: bool = True) -> torch.Tensor:
    """Fused ``decode_ops.decode_attention``: [B, (H+2G)D] -> [B, H D]; writes the new K/V in place.
    ``pdl``: launched as a programmatic dependent (``triton_pdl``; only with the fused merge).
    ``merge_ahead``: the merge reads its partials four ahead (same arithmetic; False: the path before)."""
    batch = qkv.shape[0]
    heads, groups, dim, per_group = shape.num_heads, shape.num_groups, shape.head_dim, shape.heads_per_group
    out = torch.empty(batch, heads * dim, dtype=qkv.dtype, device=qkv.device)
    common = dict(HEADS=heads, GROUPS=groups, DIM=dim, DIM_PAD=max(MIN_DOT_ROWS, _pow2(dim)), QH=per_group,
                  QH_PAD=max(MIN_DOT_ROWS, _pow2(per_group)), CHUNK=workspace.chunk, MERGE_AHEAD=merge_ahead)
    pdl = pdl and fused_merge  # the separate merge kernel is an ordinary launch: keep the split one ordinary too
    line = triton_pdl.line_elements(keys.dtype)
    _attn_split_kernel[(batch * groups, workspace.n_splits)](
        qkv, keys, values, kv_len, slopes, workspace.part_o, workspace.part_ml, out, workspace.counters,
        qkv.stride(0), keys.stride(0), keys.stride(1), keys.stride(2), out.stride(0), workspace.n_splits,
        shape.scaling, BLOCK_N=ATTN_BLOCK_N, PRECISION=_precision(qkv.dtype), FUSED_MERGE=fused_merge, num_warps=4,
        DIM_LINES=_pow2(triton.cdiv(dim, line)), LINE=line, **_pdl(pdl), **common,
    )
    if not fused_merge:
        _attn_merge_kernel[(batch * groups,)](
            qkv, kv_len, workspace.part_o, workspace.part_ml, out, qkv.stride(0), out.stride(0), workspace.n_splits,
            shape.scaling, num_warps=4, **common,
        )
    return out


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, config: tuple[int, int, int, int],
                  norm_weight: torch.Tensor | None = None, eps: float = 0.0, swiglu: bool = False,
                  residual: torch.Tensor | None = None, pdl: bool = False) -> torch.Tensor:
    """``f(x) @ weight.T`` for M <= 16 rows on tensor cores, f = RMSNorm (``norm_weight``), SwiGLU product
    (``swiglu``: x = [gate | up]) or identity. With ``residual`` the result is added to it IN PLACE.
    ``pdl``: launched as a programmatic dependent that prefetches its first weight tile (``triton_pdl``)."""
    rows = x.shape[0]
    n, k = weight.shape
    out = residual if residual is not None else torch.empty(rows, n, dtype=weight.dtype, device=x.device)
    block_n, block_k, warps, stages = config
    prologue = prologue_code(norm_weight, swiglu)
    _skinny_linear_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, norm_weight if norm_weight is not None else weight, rows, n, k, eps,
        x.stride(0), weight.stride(0), out.stride(0),
        PROLOGUE=prologue, RESIDUAL=residual is not None, BLOCK_M=max(MIN_DOT_ROWS, _pow2(rows)),
        BLOCK_N=block_n, BLOCK_K=block_k, EVEN=(n % block_n == 0 and k % block_k == 0),
        PRECISION=_precision(weight.dtype), num_warps=warps, num_stages=stages,
        LINE=triton_pdl.line_elements(weight.dtype), **_pdl(pdl),
    )
    return out


def gemv(x: torch.Tensor, weight: torch.Tensor, config: tuple[int, int, int, int],
         norm_weight: torch.Tensor | None = None, eps: float = 0.0, swiglu: bool = False,
         residual: torch.Tensor | None = None, pdl: bool = False) -> torch.Tensor:
    """``skinny_linear`` for exactly one row, on CUDA cores (x [1, K] or [1, 2K] for SwiGLU)."""
    n, k = weight.shape
    out = residual if residual is not None else torch.empty(1, n, dtype=weight.dtype, device=x.device)
    block_n, block_k, warps, stages = config
    prologue = prologue_code(norm_weight, swiglu)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, norm_weight if norm_weight is not None else weight, n, k, eps, weight.stride(0),
        PROLOGUE=prologue, RESIDUAL=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k,
        EVEN=(n % block_n == 0 and k % block_k == 0), num_warps=warps, num_stages=stages,
        LINE=triton_pdl.line_elements(weight.dtype), **_pdl(pdl),
    )
    return out
