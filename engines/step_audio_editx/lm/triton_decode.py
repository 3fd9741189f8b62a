"""Fused CUDA kernels (Triton) for the Step1 decode step: the GPU side of ``decode_ops`` and the sampler.

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
* ``sample_and_commit``: the repetition guard, the audio constraint, temperature, top-k (an exact
  bisection for the k-th largest value), the counter-based Gumbel noise (bit-identical to
  ``sampling.uniform_noise``), argmax, and the per-row bookkeeping of ``decode_state.commit``, in one launch
  when the logits fit one tile (the <|EOT|> + audio head: 5,121 columns).

Every launcher takes torch tensors and returns torch tensors; nothing here syncs with the host, so all of
it can be captured in a CUDA graph (after one eager call has compiled the kernels). With ``pdl=True`` a
launcher starts its kernel as a programmatic dependent of the previous one (``triton_pdl``: prefetch,
wait, the same code; bit-identical results).
"""

from __future__ import annotations

import logging
import os

import torch

from ..constants import EOT_ID, TOKENS_PER_GROUP
from . import triton_pdl
from .decode_ops import AttentionShape
from .sampling import REPETITION_WINDOW, _signed, inverse_temperature, top_k_top_p

logger = logging.getLogger(__name__)

try:  # triton ships with CUDA builds of torch; CPU-only installs have none
    import triton
    import triton.language as tl

    TRITON_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the install
    triton = None
    tl = None
    TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

HAS_TRITON = triton is not None
if HAS_TRITON:
    try:  # the same CUDA math library functions torch calls: bit-identical exp / log / rsqrt
        from triton.language.extra import libdevice as _math
    except Exception:  # pragma: no cover - older triton
        _math = tl
    if os.environ.get("TRITON_INTERPRET") == "1":  # the CPU interpreter has no libdevice
        _math = tl

# Attention: keys per split-K chunk, and per inner tile.
ATTN_BLOCK_N = 64
ATTN_CHUNK_SMALL_BATCH = 128  # few (row, group) pairs: smaller chunks give more parallel programs
ATTN_CHUNK_LARGE_BATCH = 256
ATTN_LARGE_BATCH_PAIRS = 16  # (rows x KV groups) from which the larger chunk is used
SAMPLER_BLOCK = 2048  # vocabulary columns per tile of the multi-tile sampler
SAMPLER_SINGLE_TILE = 8192  # logits up to this width are sampled by one fused kernel per row
MIN_DOT_ROWS = 16  # tl.dot needs at least 16 rows
SILU_BLOCK = 1024
KTH_BISECTION_STEPS = 32  # int32 order keys: 32 halvings pin the k-th largest value exactly

# splitmix64 (sampling.py) as int64 constants, and masks for logical right shifts (kernel constants).
if HAS_TRITON:
    _GOLDEN = tl.constexpr(_signed(0x9E3779B97F4A7C15))
    _MIX1 = tl.constexpr(_signed(0xBF58476D1CE4E5B9))
    _MIX2 = tl.constexpr(_signed(0x94D049BB133111EB))
    _LOW34 = tl.constexpr((1 << 34) - 1)
    _LOW37 = tl.constexpr((1 << 37) - 1)
    _LOW33 = tl.constexpr((1 << 33) - 1)
    _LOW24 = tl.constexpr((1 << 24) - 1)


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
    def _attn_merge(b, g, cur, qkv_row, part_o_ptr, part_ml_ptr, out_ptr, stride_out, n_splits, scale,
                    HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                    QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr):
        """Merge the chunk partials of (row b, group g) with the new token's own term; write [QH, D]."""
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
        for s in range(0, n_valid):
            slot = (b * HEADS + heads) * n_splits + s
            m_s = tl.load(part_ml_ptr + slot * 2, mask=hmask, other=0.0, cache_modifier=".cg")
            l_s = tl.load(part_ml_ptr + slot * 2 + 1, mask=hmask, other=0.0, cache_modifier=".cg")
            o_s = tl.load(part_o_ptr + slot[:, None] * DIM + d[None, :], mask=hdmask, other=0.0, cache_modifier=".cg")
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
                           PDL: tl.constexpr, DIM_LINES: tl.constexpr, LINE: tl.constexpr):
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
                                HEADS, GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK)
                    tl.store(counter_ptr + pair, 0)

    @triton.jit
    def _attn_merge_kernel(qkv_ptr, kv_len_ptr, part_o_ptr, part_ml_ptr, out_ptr,
                           stride_qkv, stride_out, n_splits, scale,
                           HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                           QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr):
        pair = tl.program_id(0)
        b = pair // GROUPS
        g = pair % GROUPS
        kv_len = tl.load(kv_len_ptr + b)
        if kv_len > 0:
            _attn_merge(b, g, kv_len - 1, qkv_ptr + b * stride_qkv, part_o_ptr, part_ml_ptr, out_ptr, stride_out,
                        n_splits, scale, HEADS, GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK)
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
        rm = tl.arange(0, BLOCK_M)
        mmask = rm < M
        factor = tl.zeros([BLOCK_M, 1], tl.float32)
        if PROLOGUE == 1:
            sq = tl.zeros([BLOCK_M], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                xk = tl.load(x_ptr + rm[:, None] * stride_x + rk[None, :],
                             mask=mmask[:, None] & (rk[None, :] < K), other=0.0).to(tl.float32)
                sq += tl.sum(xk * xk, 1)
            factor = _math.rsqrt(sq / K + eps)[:, None]
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
        out = acc.to(out_ptr.dtype.element_ty)
        omask = mmask[:, None] & nmask[None, :]
        if RESIDUAL:
            r = tl.load(out_ptr + rm[:, None] * stride_out + rn[None, :], mask=omask, other=0.0)
            out = (out.to(tl.float32) + r.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + rm[:, None] * stride_out + rn[None, :], out, mask=omask)

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
            sq = tl.zeros([BLOCK_K], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                xk = tl.load(x_ptr + rk, mask=rk < K, other=0.0).to(tl.float32)
                sq += xk * xk
            factor = _math.rsqrt(tl.sum(sq, 0) / K + eps)
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
        if RESIDUAL:
            r = tl.load(out_ptr + rn, mask=nmask, other=0.0)
            out = (out.to(tl.float32) + r.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + rn, out, mask=nmask)

    # --- sampler -----------------------------------------------------------------------------------

    @triton.jit
    def _lshr(x, bits: tl.constexpr, low: tl.constexpr):
        """Logical right shift of int64 (as ``sampling._shr``)."""
        return (x >> bits) & low

    @triton.jit
    def _splitmix64(x):
        """``sampling._splitmix64`` in wrapping int64 arithmetic: bit-identical."""
        x = x + _GOLDEN
        x = (x ^ _lshr(x, 30, _LOW34)) * _MIX1
        x = (x ^ _lshr(x, 27, _LOW37)) * _MIX2
        return x ^ _lshr(x, 31, _LOW33)

    @triton.jit
    def _gumbel_scores(x, hashed, seed, step):
        """``x - log(-log(u))`` with u from (seed, step, id) exactly as ``sampling.uniform_noise``; -inf stays."""
        row_hash = _splitmix64(_splitmix64(seed) ^ step)
        bits = _lshr(_splitmix64(row_hash ^ hashed), 40, _LOW24)
        u = (bits.to(tl.float32) + 0.5) * (1.0 / 16777216.0)
        return tl.where(x == float("-inf"), float("-inf"), x - _math.log(-_math.log(u)))  # u == 1.0: no NaN

    @triton.jit
    def _order_key(x):
        """int32 keys ordered like the float32 values (-0.0 folded into +0.0)."""
        bits = (x + 0.0).to(tl.int32, bitcast=True)
        return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)

    @triton.jit
    def _kth_largest_key(keys, k, STEPS: tl.constexpr):
        """The k-th largest of ``keys`` (int32 tile; padding lanes hold INT32_MIN) by bisection."""
        wide = keys.to(tl.int64)
        lo = tl.full([], -2147483648, tl.int64)  # count(keys >= lo) >= k holds
        hi = tl.full([], 2147483648, tl.int64)  # count(keys >= hi) < k holds
        for _ in range(STEPS):
            mid = (lo + hi) >> 1
            enough = tl.sum((wide >= mid).to(tl.int32), 0) >= k
            lo = tl.where(enough, mid, lo)
            hi = tl.where(enough, hi, mid)
        return lo

    @triton.jit
    def _guard_ban(hist_ptr, b, stride_hist, WINDOW: tl.constexpr, WINDOW_PAD: tl.constexpr):
        """The id the repetition guard bans for row b, or -1."""
        w = tl.arange(0, WINDOW_PAD)
        window = tl.load(hist_ptr + b * stride_hist + w, mask=w < WINDOW, other=-1).to(tl.int64)
        last = tl.sum(tl.where(w == WINDOW - 1, window, 0), 0)
        count = tl.sum(((window == last) & (w < WINDOW)).to(tl.int32), 0)
        full = tl.sum(((window < 0) & (w < WINDOW)).to(tl.int32), 0) == 0
        return tl.where((count > 1) & full, last, -1)

    @triton.jit
    def _commit(b, token, tokens_ptr, pos_ptr, n_gen_ptr, caps_ptr, active_ptr, hist_ptr, rows_ptr, out_ptr,
                kv_len_ptr, stride_hist, stride_out, out_cols, WINDOW: tl.constexpr, WINDOW_PAD: tl.constexpr,
                EOT: tl.constexpr):
        """Append ``token`` to running row b: output buffer, history window, counters, stop flag."""
        n = tl.load(n_gen_ptr + b)
        row = tl.load(rows_ptr + b)
        tl.store(out_ptr + row * stride_out + tl.minimum(n, out_cols - 1), token)
        w = tl.arange(0, WINDOW_PAD)
        shifted = tl.load(hist_ptr + b * stride_hist + w + 1, mask=w < WINDOW - 1, other=0)
        shifted = tl.where(w == WINDOW - 1, token, shifted)
        tl.debug_barrier()
        tl.store(hist_ptr + b * stride_hist + w, shifted, mask=w < WINDOW)
        tl.store(n_gen_ptr + b, n + 1)
        tl.store(tokens_ptr + b, token)
        pos = tl.load(pos_ptr + b) + 1
        tl.store(pos_ptr + b, pos)
        still = (token != EOT) & (n + 1 < tl.load(caps_ptr + b))
        tl.store(active_ptr + b, still.to(tl.int1))
        tl.store(kv_len_ptr + b, tl.where(still, pos + 1, 0).to(tl.int32))

    @triton.jit
    def _sample_tile_kernel(logits_ptr, ids_ptr, hashed_ptr, masks_ptr, seeds_ptr, inv_temperature, top_k,
                            tokens_ptr, pos_ptr, n_gen_ptr, caps_ptr, active_ptr, hist_ptr, rows_ptr, out_ptr,
                            kv_len_ptr, n_cols, stride_logits, stride_hist, stride_out, out_cols,
                            GUARD: tl.constexpr, CONSTRAIN: tl.constexpr, GREEDY: tl.constexpr,
                            HAS_IDS: tl.constexpr, HAS_TOPK: tl.constexpr, WINDOW: tl.constexpr,
                            WINDOW_PAD: tl.constexpr, GROUP: tl.constexpr, EOT: tl.constexpr, BLOCK: tl.constexpr,
                            KTH_STEPS: tl.constexpr, PDL: tl.constexpr):
        """One row's whole choice in one tile (n_cols <= BLOCK): ``select_next`` + ``commit``."""
        if PDL:
            triton_pdl.enter()
        b = tl.program_id(0)
        if tl.load(active_ptr + b) != 0:
            n = tl.load(n_gen_ptr + b)
            cols = tl.arange(0, BLOCK)
            cmask = cols < n_cols
            x = tl.load(logits_ptr + b * stride_logits + cols, mask=cmask, other=float("-inf")).to(tl.float32)
            if HAS_IDS:
                ids = tl.load(ids_ptr + cols, mask=cmask, other=-2)
            else:
                ids = cols.to(tl.int64)
            if GUARD:
                x = tl.where(ids == _guard_ban(hist_ptr, b, stride_hist, WINDOW, WINDOW_PAD), float("-inf"), x)
            if CONSTRAIN:
                allowed = tl.load(masks_ptr + (n % GROUP) * n_cols + cols, mask=cmask, other=0) != 0
                allowed = allowed & ~((n == 0) & (ids == EOT))
                x = tl.where(allowed, x, float("-inf"))
            if GREEDY:
                col = tl.argmax(x, 0)
            else:
                x = x * inv_temperature
                if HAS_TOPK:
                    keys = tl.where(cmask, _order_key(x), -2147483648)
                    kth = _kth_largest_key(keys, top_k, KTH_STEPS)
                    x = tl.where(keys.to(tl.int64) < kth, float("-inf"), x)
                hashed = tl.load(hashed_ptr + cols, mask=cmask, other=0)
                score = _gumbel_scores(x, hashed, tl.load(seeds_ptr + b), n)
                col = tl.argmax(tl.where(cmask, score, float("-inf")), 0)
            if HAS_IDS:
                token = tl.load(ids_ptr + col)
            else:
                token = col.to(tl.int64)
            _commit(b, token, tokens_ptr, pos_ptr, n_gen_ptr, caps_ptr, active_ptr, hist_ptr, rows_ptr, out_ptr,
                    kv_len_ptr, stride_hist, stride_out, out_cols, WINDOW, WINDOW_PAD, EOT)

    @triton.jit
    def _prepare_logits_kernel(logits_ptr, work_ptr, ids_ptr, masks_ptr, hist_ptr, n_gen_ptr, inv_temperature,
                               n_cols, stride_logits, stride_work, stride_hist,
                               GUARD: tl.constexpr, CONSTRAIN: tl.constexpr, HAS_IDS: tl.constexpr,
                               WINDOW: tl.constexpr, WINDOW_PAD: tl.constexpr, GROUP: tl.constexpr,
                               EOT: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
        """Multi-tile path, step 1: ``work = guard(constraint(logits)) * (1/T)`` (torch then filters top-p)."""
        if PDL:
            triton_pdl.enter()
        b = tl.program_id(0)
        n = tl.load(n_gen_ptr + b)
        banned = tl.full([], -1, tl.int64)
        if GUARD:
            banned = _guard_ban(hist_ptr, b, stride_hist, WINDOW, WINDOW_PAD)
        for c0 in range(0, n_cols, BLOCK):
            cols = c0 + tl.arange(0, BLOCK)
            cmask = cols < n_cols
            x = tl.load(logits_ptr + b * stride_logits + cols, mask=cmask, other=float("-inf")).to(tl.float32)
            if HAS_IDS:
                ids = tl.load(ids_ptr + cols, mask=cmask, other=-2)
            else:
                ids = cols.to(tl.int64)
            x = tl.where(ids == banned, float("-inf"), x)
            if CONSTRAIN:
                allowed = tl.load(masks_ptr + (n % GROUP) * n_cols + cols, mask=cmask, other=0) != 0
                allowed = allowed & ~((n == 0) & (ids == EOT))
                x = tl.where(allowed, x, float("-inf"))
            tl.store(work_ptr + b * stride_work + cols, x * inv_temperature, mask=cmask)

    @triton.jit
    def _argmax_commit_kernel(work_ptr, kth_ptr, hashed_ptr, seeds_ptr, ids_ptr,
                              tokens_ptr, pos_ptr, n_gen_ptr, caps_ptr, active_ptr, hist_ptr, rows_ptr, out_ptr,
                              kv_len_ptr, n_cols, stride_work, stride_hist, stride_out, out_cols,
                              HAS_KTH: tl.constexpr, NOISE: tl.constexpr, HAS_IDS: tl.constexpr,
                              WINDOW: tl.constexpr, WINDOW_PAD: tl.constexpr, EOT: tl.constexpr,
                              BLOCK: tl.constexpr, PDL: tl.constexpr):
        """Multi-tile path, step 2: top-k threshold, Gumbel noise (or none: greedy), argmax, commit."""
        if PDL:
            triton_pdl.enter()
        b = tl.program_id(0)
        if tl.load(active_ptr + b) != 0:
            n = tl.load(n_gen_ptr + b)
            seed = tl.load(seeds_ptr + b)
            kth = float("-inf")
            if HAS_KTH:
                kth = tl.load(kth_ptr + b)
            best_val = tl.full([], float("-inf"), tl.float32)
            best_col = tl.full([], 0, tl.int64)
            for c0 in range(0, n_cols, BLOCK):
                cols = c0 + tl.arange(0, BLOCK)
                cmask = cols < n_cols
                x = tl.load(work_ptr + b * stride_work + cols, mask=cmask, other=float("-inf"))
                x = tl.where(x < kth, float("-inf"), x)
                if NOISE:
                    hashed = tl.load(hashed_ptr + cols, mask=cmask, other=0)
                    x = _gumbel_scores(x, hashed, seed, n)
                x = tl.where(cmask, x, float("-inf"))
                tile_best = tl.max(x, 0)
                tile_col = tl.argmax(x, 0).to(tl.int64) + c0
                better = tile_best > best_val
                best_col = tl.where(better, tile_col, best_col)
                best_val = tl.where(better, tile_best, best_val)
            if HAS_IDS:
                token = tl.load(ids_ptr + best_col)
            else:
                token = best_col
            _commit(b, token, tokens_ptr, pos_ptr, n_gen_ptr, caps_ptr, active_ptr, hist_ptr, rows_ptr, out_ptr,
                    kv_len_ptr, stride_hist, stride_out, out_cols, WINDOW, WINDOW_PAD, EOT)


def _pdl(pdl: bool) -> dict:
    """The kernel flag and the launch option of a programmatic dependent launch (``triton_pdl``)."""
    return {"PDL": True, "launch_pdl": True} if pdl else {"PDL": False}


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
                     fused_merge: bool = True, pdl: bool = False) -> torch.Tensor:
    """Fused ``decode_ops.decode_attention``: [B, (H+2G)D] -> [B, H D]; writes the new K/V in place.
    ``pdl``: launched as a programmatic dependent (``triton_pdl``; only with the fused merge)."""
    batch = qkv.shape[0]
    heads, groups, dim, per_group = shape.num_heads, shape.num_groups, shape.head_dim, shape.heads_per_group
    out = torch.empty(batch, heads * dim, dtype=qkv.dtype, device=qkv.device)
    common = dict(HEADS=heads, GROUPS=groups, DIM=dim, DIM_PAD=max(MIN_DOT_ROWS, _pow2(dim)), QH=per_group,
                  QH_PAD=max(MIN_DOT_ROWS, _pow2(per_group)), CHUNK=workspace.chunk)
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
    prologue = 1 if norm_weight is not None else (2 if swiglu else 0)
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
    prologue = 1 if norm_weight is not None else (2 if swiglu else 0)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, weight, out, norm_weight if norm_weight is not None else weight, n, k, eps, weight.stride(0),
        PROLOGUE=prologue, RESIDUAL=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k,
        EVEN=(n % block_n == 0 and k % block_k == 0), num_warps=warps, num_stages=stages,
        LINE=triton_pdl.line_elements(weight.dtype), **_pdl(pdl),
    )
    return out


def sample_and_commit(logits: torch.Tensor, config, state, tables, pdl: bool = False) -> None:
    """Fused ``sampling.select_next`` + ``decode_state.commit``: picks each running row's next id and appends
    it (``state``: a ``DecodeState`` view of B rows; ``tables``: the session's ``SamplerTables``)."""
    batch, n_cols = logits.shape
    has_ids = tables.vocab_ids is not None
    ids = tables.vocab_ids if has_ids else tables.hashed_ids  # any int64 tensor when unused
    masks = tables.slot_masks if config.constrain_audio else logits
    window_pad = _pow2(REPETITION_WINDOW + 1)
    book = (state.tokens, state.pos, state.n_gen, state.caps, state.active, state.history, state.rows, state.out,
            state.kv_len)
    strides = (state.history.stride(0), state.out.stride(0), state.out.shape[1])
    greedy = config.greedy
    inv_temperature = 1.0 if greedy else inverse_temperature(config)
    use_top_k = not greedy and 0 < config.top_k < n_cols
    if n_cols <= SAMPLER_SINGLE_TILE and (greedy or config.top_p >= 1.0):
        _sample_tile_kernel[(batch,)](
            logits, ids, tables.hashed_ids, masks, state.seeds, inv_temperature, config.top_k if use_top_k else 0,
            *book, n_cols, logits.stride(0), *strides,
            GUARD=config.repetition_guard, CONSTRAIN=config.constrain_audio, GREEDY=greedy, HAS_IDS=has_ids,
            HAS_TOPK=use_top_k, WINDOW=REPETITION_WINDOW, WINDOW_PAD=window_pad, GROUP=TOKENS_PER_GROUP, EOT=EOT_ID,
            BLOCK=_pow2(n_cols), KTH_STEPS=KTH_BISECTION_STEPS, num_warps=16, **_pdl(pdl),
        )
        return
    work = torch.empty(batch, n_cols, dtype=torch.float32, device=logits.device)
    _prepare_logits_kernel[(batch,)](
        logits, work, ids, masks, state.history, state.n_gen, inv_temperature, n_cols, logits.stride(0), work.stride(0),
        state.history.stride(0), GUARD=config.repetition_guard, CONSTRAIN=config.constrain_audio, HAS_IDS=has_ids,
        WINDOW=REPETITION_WINDOW, WINDOW_PAD=window_pad, GROUP=TOKENS_PER_GROUP, EOT=EOT_ID, BLOCK=SAMPLER_BLOCK,
        num_warps=8, **_pdl(pdl),
    )
    kth = None
    if not greedy and config.top_p < 1.0:
        work = top_k_top_p(work, config.top_k, config.top_p)
    elif use_top_k:
        kth = torch.topk(work, config.top_k, dim=-1).values[:, -1].contiguous()
    _argmax_commit_kernel[(batch,)](
        work, kth if kth is not None else work, tables.hashed_ids, state.seeds, ids, *book, n_cols,
        work.stride(0), *strides, HAS_KTH=kth is not None, NOISE=not greedy, HAS_IDS=has_ids,
        WINDOW=REPETITION_WINDOW, WINDOW_PAD=window_pad, EOT=EOT_ID, BLOCK=SAMPLER_BLOCK, num_warps=8, **_pdl(pdl),
    )
