"""The Step1 decode step's token choice as one Triton launch: the GPU side of ``sampling`` + ``decode_state``.

``sample_and_commit``: the repetition guard, the audio constraint, temperature, top-k (an exact bisection
for the k-th largest value), the counter-based Gumbel noise (bit-identical to ``sampling.uniform_noise``),
argmax, and the per-row bookkeeping of ``decode_state.commit``, in one launch when the logits fit one tile
(the <|EOT|> + audio head: 5,121 columns), else a prepare pass, torch's top-k and an argmax-commit pass.
Nothing syncs with the host (CUDA-graph capturable); ``pdl`` as in ``triton_decode``.
"""

from __future__ import annotations

import torch

from ..constants import EOT_ID, TOKENS_PER_GROUP
from . import triton_pdl
from .sampling import REPETITION_WINDOW, _signed, inverse_temperature, top_k_top_p
from .triton_decode import HAS_TRITON, _pdl, _pow2, tl, triton

if HAS_TRITON:
    from .triton_decode import _math  # libdevice: the log torch's noise uses (bit-identical)

SAMPLER_BLOCK = 2048  # vocabulary columns per tile of the multi-tile sampler
SAMPLER_SINGLE_TILE = 8192  # logits up to this width are sampled by one fused kernel per row
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


if HAS_TRITON:

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
