"""Fused decode attention (Triton) for the Step1 decode step: the GPU side of ``decode_ops.decode_attention``.

``decode_attention``: flash-decoding for one query per row with sqrt-ALiBi computed in the kernel
(``-slope * sqrt(distance)``, rounded to the activation dtype like the model's dense bias), GQA packing (the
H/G query heads of a group share each loaded key tile), the new key/value written into the static cache, and
split-K over fixed chunks of the cache: a chunk past a row's length returns at once, so one captured graph
serves every length up to the cache size. The last chunk program of a (row, group) to finish merges the
partial results (an atomic counter), so attention is one launch per layer. Like every launcher of
``triton_decode`` it never syncs with the host (graph-capturable), and ``pdl=True`` launches it as a
programmatic dependent (``triton_pdl``; bit-identical results).
"""

from __future__ import annotations

import torch

from ..triton_import import HAS_TRITON, tl, triton
from . import triton_pdl
from .decode_ops import AttentionShape
from .triton_decode import MIN_DOT_ROWS, _pdl, _pow2, _precision

# Attention: keys per split-K chunk, and per inner tile.
ATTN_BLOCK_N = 64
ATTN_CHUNK_SMALL_BATCH = 128  # few (row, group) pairs: smaller chunks give more parallel programs
ATTN_CHUNK_LARGE_BATCH = 256
ATTN_LARGE_BATCH_PAIRS = 16  # (rows x KV groups) from which the larger chunk is used


def attention_chunk(batch: int, groups: int) -> int:
    """Keys per split-K chunk for a batch bucket (fixed per captured graph)."""
    return ATTN_CHUNK_LARGE_BATCH if batch * groups >= ATTN_LARGE_BATCH_PAIRS else ATTN_CHUNK_SMALL_BATCH


if HAS_TRITON:

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
        if PDL:
            b = pair // GROUPS
            g = pair % GROUPS
            triton_pdl.enter_kv(k_ptr + b * stride_kb + g * stride_kg, v_ptr + b * stride_kb + g * stride_kg,
                                kv_len_ptr, b, split, stride_kl, DIM, CHUNK, DIM_LINES, LINE)
        _attn_item(pair, split, qkv_ptr, k_ptr, v_ptr, kv_len_ptr, slopes_ptr, part_o_ptr, part_ml_ptr, out_ptr,
                   counter_ptr, stride_qkv, stride_kb, stride_kg, stride_kl, stride_out, n_splits, scale, HEADS,
                   GROUPS, DIM, DIM_PAD, QH, QH_PAD, CHUNK, BLOCK_N, PRECISION, FUSED_MERGE, PDL, MERGE_AHEAD)

    @triton.jit
    def _attn_item(pair, split, qkv_ptr, k_ptr, v_ptr, kv_len_ptr, slopes_ptr, part_o_ptr, part_ml_ptr, out_ptr,
                   counter_ptr, stride_qkv, stride_kb, stride_kg, stride_kl, stride_out, n_splits, scale,
                   HEADS: tl.constexpr, GROUPS: tl.constexpr, DIM: tl.constexpr, DIM_PAD: tl.constexpr,
                   QH: tl.constexpr, QH_PAD: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
                   PRECISION: tl.constexpr, FUSED_MERGE: tl.constexpr, PDL: tl.constexpr, MERGE_AHEAD: tl.constexpr):
        """Chunk ``split`` of (row, group) ``pair``: its partial result, and the merge if it reports last. One
        program's work in ``_attn_split_kernel``, any program's in the persistent layer kernel."""
        b = pair // GROUPS
        g = pair % GROUPS
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
                # every warp's partials are written before thread 0 reports them (acq_rel: published); Triton
                # happened to place this barrier already, for its own shared-memory use: now it is asked for
                tl.debug_barrier()
                done = tl.atomic_add(counter_ptr + pair, 1)
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


class AttentionWorkspace:
    """Split-K partial results and merge counters for one batch bucket and cache length (shared by layers)."""

    def __init__(self, batch: int, shape: AttentionShape, cache_length: int, device: torch.device) -> None:
        self.chunk = attention_chunk(batch, shape.num_groups)
        self.n_splits = triton.cdiv(cache_length, self.chunk)
        self.part_o = torch.empty(batch, shape.num_heads, self.n_splits, shape.head_dim, dtype=torch.float32,
                                  device=device)
        self.part_ml = torch.empty(batch, shape.num_heads, self.n_splits, 2, dtype=torch.float32, device=device)
        self.counters = torch.zeros(batch * shape.num_groups, dtype=torch.int32, device=device)


def shape_constexprs(shape: AttentionShape) -> dict:
    """The attention programs' compile-time numbers for ``shape`` (heads, groups, head dim and their padded
    tiles), shared by every kernel that runs ``_attn_item``."""
    return dict(HEADS=shape.num_heads, GROUPS=shape.num_groups, DIM=shape.head_dim,
                DIM_PAD=max(MIN_DOT_ROWS, _pow2(shape.head_dim)), QH=shape.heads_per_group,
                QH_PAD=max(MIN_DOT_ROWS, _pow2(shape.heads_per_group)))


def decode_attention(qkv: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, kv_len: torch.Tensor,
                     slopes: torch.Tensor, shape: AttentionShape, workspace: AttentionWorkspace,
                     fused_merge: bool = True, pdl: bool = False, merge_ahead: bool = True) -> torch.Tensor:
    """Fused ``decode_ops.decode_attention``: [B, (H+2G)D] -> [B, H D]; writes the new K/V in place.
    ``pdl``: launched as a programmatic dependent (``triton_pdl``; only with the fused merge).
    ``merge_ahead``: the merge reads its partials four ahead (same arithmetic; False: the path before)."""
    batch = qkv.shape[0]
    heads, groups, dim = shape.num_heads, shape.num_groups, shape.head_dim
    out = torch.empty(batch, heads * dim, dtype=qkv.dtype, device=qkv.device)
    common = dict(shape_constexprs(shape), CHUNK=workspace.chunk, MERGE_AHEAD=merge_ahead)
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
