"""Step1's sqrt-ALiBi attention: positions, the bias, and the backends that can apply it.

Step1 has no RoPE. Its only position signal is an additive bias (facts doc section 2)::

    score[h, i, j] = q_i . k_j / sqrt(d) - slope[h] * sqrt(pos_i - pos_j)     for pos_j <= pos_i

Everything position-related is computed ONCE per forward (``make_attention_bias``) from a 2-D padding
mask and the cache offset, as a rectangular [query, key] problem, and handed to every layer:

* ``AlibiPositions``: per row, the position of every query and key slot and whether the slot holds a
  real token. Positions count real tokens only, so a left-padded row sees exactly the distances of its
  unpadded self (the official code ignores the mask and gets this wrong).
* ``Step1AttentionBias``: the positions plus, for the backends that need one, a dense additive bias
  ``[B or 1, H, Q, K]`` in the compute dtype (pad keys and future keys are -inf).

Backends (all exact): ``eager`` (reference math), ``sdpa`` (float bias through the memory-efficient kernel on
CUDA, a KV group's query heads folded onto the query axis instead of expanded K/V; ``enable_gqa``, i.e.
cuDNN on Hopper, is opt-in), ``flex_attention``
(a ``score_mod`` reading the positions; compiled on CUDA, the unfused reference on CPU) and ``xformers``
(registered in transformers' ``AttentionInterface`` when xformers imports). flash-attn's linear
``alibi_slopes`` cannot express the square root, so there is no flash backend.

Layer-side entry point: ``step1_attention(name, query, key, value, bias, scaling)`` with
query ``[B, H, Q, D]``, key/value ``[B, G, K, D]`` (G KV groups; query head h reads group h // (H/G)),
returning ``[B, Q, H, D]``. It has no data-dependent Python branches and no host syncs, so a layer
that calls it stays torch.compile / CUDA-graph friendly.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..constants import (
    ALIBI_SLOPE_BASE_EXP,
    ALIBI_SLOPE_EXTRA_EXP,
    ATTN_BIAS_ALIGNMENT,
)
from ..sdpa_kernels import sdpa_without_cudnn

logger = logging.getLogger(__name__)

STEP1_ATTENTION_BACKENDS: tuple[str, ...] = ("eager", "sdpa", "flex_attention", "xformers")
DENSE_BIAS_BACKENDS: frozenset[str] = frozenset({"eager", "sdpa", "xformers"})
# How the sdpa backend meets grouped K/V: a group's query heads folded onto the query axis (the default), K/V
# expanded to every head (the path before; same bits), or SDPA's own enable_gqa (cuDNN on Hopper; opt-in).
SDPA_GQA_MODES: tuple[str, ...] = ("fold", "expand", "enable_gqa")


class Step1AttentionError(ValueError):
    """An attention backend or attention input that Step1's sqrt-ALiBi attention cannot use."""


# --- slopes and positions ------------------------------------------------------------------------

def alibi_slopes(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-head slopes ``[H]`` float32, computed exactly as the official code does.

    n = 2^floor(log2(H)): ``(2^(-8/n))^k`` for k = 1..n, then, when H is not a power of two,
    ``(2^(-4/n))^m`` for m = 1, 3, 5, ... (H - n values). Built with torch ops on ``device``
    (no host copy), so it can run inside a captured graph.
    """
    if num_heads < 1:
        raise Step1AttentionError(f"num_heads must be >= 1, got {num_heads}.")
    n = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-ALIBI_SLOPE_BASE_EXP / n)
    slopes = torch.pow(base, torch.arange(1, n + 1, device=device, dtype=torch.float32))
    if n < num_heads:
        extra_base = 2.0 ** (-ALIBI_SLOPE_EXTRA_EXP / n)
        extra = torch.pow(extra_base, torch.arange(1, 1 + 2 * (num_heads - n), 2, device=device, dtype=torch.float32))
        slopes = torch.cat([slopes, extra])
    return slopes


@dataclass
class AlibiPositions:
    """Where every query and key slot sits, per batch row (B' = batch size, or 1 when all rows agree).

    query_positions: int64 ``[B', Q]``  position of each query token (count of real tokens before it).
    key_positions:   int64 ``[B', K]``  position of each key slot (cache slots included).
    key_valid:       bool  ``[B', K]``  slot holds a real token (False: left padding, unwritten cache).
    query_valid:     bool  ``[B', Q]``  query is a real token (pad queries get a harmless zero bias row).
    """

    query_positions: torch.Tensor
    key_positions: torch.Tensor
    key_valid: torch.Tensor
    query_valid: torch.Tensor


def alibi_positions(
    attention_mask: torch.Tensor | None,
    query_length: int,
    past_length: int | torch.Tensor,
    kv_length: int,
    device: torch.device | str,
) -> AlibiPositions:
    """Positions for ``query_length`` new tokens written after ``past_length`` cached ones.

    ``attention_mask``: optional 2-D ``[B, M]`` padding mask (1 = token, 0 = pad) over the cached and the
    new tokens, M = past + new (transformers' convention; M < kv_length is padded with "empty", which is
    what a static cache's unwritten tail is). ``kv_length``: the number of key slots attention will see
    (past + new for a growing cache, the allocated length for a static one). ``past_length`` may be a
    0-d tensor (a static cache's counter): nothing here reads it on the host.
    """
    slots = torch.arange(kv_length, device=device)
    query_slots = torch.arange(query_length, device=device) + past_length
    filled = slots < (past_length + query_length)
    if attention_mask is None:
        return AlibiPositions(
            query_positions=query_slots[None],
            key_positions=slots[None],
            key_valid=filled[None],
            query_valid=torch.ones(1, query_length, dtype=torch.bool, device=device),
        )
    if attention_mask.dim() != 2:
        raise Step1AttentionError(
            f"Step1 takes a 2-D [batch, keys] padding mask (1 = token, 0 = pad); got shape "
            f"{tuple(attention_mask.shape)}. For custom positions build the bias with make_attention_bias."
        )
    mask = attention_mask.to(device=device, dtype=torch.bool)
    mask_length = mask.shape[1]
    if mask_length > kv_length:
        raise Step1AttentionError(
            f"attention_mask covers {mask_length} tokens but attention sees only {kv_length} key slots; "
            "pass a mask over the cached and the new tokens only."
        )
    if isinstance(past_length, int) and mask_length < past_length + query_length:
        raise Step1AttentionError(
            f"attention_mask covers {mask_length} tokens but there are {past_length} cached + {query_length} new "
            "ones; the mask must cover the cached tokens too (transformers' convention)."
        )
    if mask_length < kv_length:
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], kv_length - mask_length)], dim=1)
    key_valid = mask & filled
    key_positions = key_valid.long().cumsum(-1) - 1
    return AlibiPositions(
        query_positions=key_positions.index_select(1, query_slots),
        key_positions=key_positions,
        key_valid=key_valid,
        query_valid=key_valid.index_select(1, query_slots),
    )


def dense_alibi_bias(slopes: torch.Tensor, positions: AlibiPositions, dtype: torch.dtype) -> torch.Tensor:
    """The additive bias ``[B', H, Q, K]`` in ``dtype``: ``-slope[h] * sqrt(pos_q - pos_k)``, -inf where masked.

    The product is computed in float32 and rounded once into ``dtype`` (as the official code rounds its
    bias to the activation dtype). The key dimension of the storage is padded to a multiple of
    ``ATTN_BIAS_ALIGNMENT`` so fused kernels read it in place. Rows of pad queries are all zero (never
    all -inf), so no NaN is ever produced, even for rows whose values nobody reads.
    """
    qpos, kpos = positions.query_positions, positions.key_positions
    rows = max(qpos.shape[0], kpos.shape[0])
    num_heads = slopes.shape[0]
    q_len, k_len = qpos.shape[1], kpos.shape[1]
    distance = qpos[:, :, None] - kpos[:, None, :]  # [B', Q, K]
    allowed = positions.key_valid[:, None, :] & (distance >= 0)
    neg_root = -distance.clamp(min=0).to(torch.float32).sqrt()
    neg_root = neg_root.masked_fill(~allowed, float("-inf"))  # slope * -inf = -inf (slopes are > 0)
    neg_root = neg_root.masked_fill(~positions.query_valid[:, :, None], 0.0)
    padded = -(-k_len // ATTN_BIAS_ALIGNMENT) * ATTN_BIAS_ALIGNMENT
    neg_root = F.pad(neg_root, (0, padded - k_len))
    storage = torch.empty(rows, num_heads, q_len, padded, dtype=dtype, device=slopes.device)
    torch.mul(neg_root[:, None], slopes.to(torch.float32)[None, :, None, None], out=storage)
    return storage[..., :k_len]


@dataclass
class Step1AttentionBias:
    """What every layer of one forward needs for attention; built once by ``make_attention_bias``.

    slopes ``[H]`` float32; positions (see ``AlibiPositions``); dense ``[B', H, Q, K]`` additive bias in the
    compute dtype, present when the backend reads one (eager, sdpa, xformers); ``sdpa_gqa``: how the sdpa
    backend meets grouped K/V (one of ``SDPA_GQA_MODES``).
    """

    slopes: torch.Tensor
    positions: AlibiPositions
    dense: torch.Tensor | None = None
    sdpa_gqa: str = "fold"


def sdpa_supports_enable_gqa() -> bool:
    """torch >= 2.5 has ``scaled_dot_product_attention(..., enable_gqa=...)``."""
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


def default_sdpa_gqa(device: torch.device) -> str:
    """"fold": the memory-efficient kernel on unexpanded K/V (see ``sdpa_attention``). ``enable_gqa=True``
    routes Hopper to cuDNN attention, which builds an execution plan for every new sequence length: measured
    on an H100 (torch 2.11, 1,300-token prefill of the full model) 1.1 s for the first shape and ~90 ms for
    each new length, against ~30 ms at every length for the pinned memory-efficient kernel (and 23 ms for
    cuDNN only when the length repeats). Prompt lengths vary per request, so cuDNN is opt-in."""
    del device
    return "fold"


def make_attention_bias(
    backend: str,
    num_heads: int,
    attention_mask: torch.Tensor | None,
    query_length: int,
    past_length: int | torch.Tensor,
    kv_length: int,
    device: torch.device,
    dtype: torch.dtype,
    sdpa_gqa: str | None = None,
) -> Step1AttentionBias:
    """Build the per-forward attention inputs for ``backend`` (see ``alibi_positions`` for the arguments).

    ``sdpa_gqa``: None picks ``default_sdpa_gqa(device)``; one of ``SDPA_GQA_MODES`` forces it (benchmarks,
    tests). "enable_gqa" on a torch without it (< 2.5) folds instead.
    """
    if backend not in STEP1_ATTENTION_BACKENDS:
        raise Step1AttentionError(
            f"Step1 attention backend {backend!r} is unknown; use one of {', '.join(STEP1_ATTENTION_BACKENDS)}."
        )
    if sdpa_gqa is None:
        sdpa_gqa = default_sdpa_gqa(device)
    if sdpa_gqa not in SDPA_GQA_MODES:
        raise Step1AttentionError(f"sdpa_gqa {sdpa_gqa!r} is unknown; use one of {', '.join(SDPA_GQA_MODES)}.")
    if sdpa_gqa == "enable_gqa" and not sdpa_supports_enable_gqa():
        sdpa_gqa = "fold"
    slopes = alibi_slopes(num_heads, device)
    positions = alibi_positions(attention_mask, query_length, past_length, kv_length, device)
    dense = dense_alibi_bias(slopes, positions, dtype) if backend in DENSE_BIAS_BACKENDS else None
    return Step1AttentionBias(slopes=slopes, positions=positions, dense=dense, sdpa_gqa=sdpa_gqa)


# --- backends --------------------------------------------------------------------------------------

def repeat_kv(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, G, K, D]`` -> ``[B, H, K, D]`` with head h reading group h // (H/G) (= repeat_interleave)."""
    batch, groups, length, dim = states.shape
    if groups == num_heads:
        return states
    rep = num_heads // groups
    return states[:, :, None].expand(batch, groups, rep, length, dim).reshape(batch, num_heads, length, dim)


def eager_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    bias: Step1AttentionBias, scaling: float) -> torch.Tensor:
    """Reference math: softmax(q k^T * scaling + bias) v, softmax in float32. Returns ``[B, Q, H, D]``."""
    num_heads = query.shape[1]
    key, value = repeat_kv(key, num_heads), repeat_kv(value, num_heads)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling + bias.dense
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    return torch.matmul(probs, value).transpose(1, 2)


def fold_query_heads(query: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, H, Q, D]`` -> ``[B, G, (H/G) Q, D]``: the H/G query heads of a KV group stacked on the query axis
    (head ``g * (H/G) + r``'s query ``i`` at row ``r * Q + i``), so attention reads each group's K/V as it is."""
    batch, heads, length, dim = query.shape
    return query.reshape(batch, groups, heads // groups * length, dim)


def fold_bias_heads(bias: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense bias ``[B', H, Q, K]`` in ``fold_query_heads``' row order, ``[B', G, (H/G) Q, K]``: a view of the
    same storage (the heads of a group and the queries are adjacent in it), never a copy."""
    rows, heads, length, keys = bias.shape
    return bias.view(rows, groups, heads // groups * length, keys)


def unfold_output_heads(out: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention output ``[B, G, (H/G) Q, D]`` in the folded row order -> ``[B, Q, H, D]``."""
    batch, groups, rows, dim = out.shape
    length = rows * groups // heads
    return out.view(batch, groups, heads // groups, length, dim).permute(0, 3, 1, 2, 4).reshape(batch, length, heads,
                                                                                                dim)


def sdpa_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   bias: Step1AttentionBias, scaling: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with the dense float bias. Returns ``[B, Q, H, D]``.

    Grouped K/V (G < H) are not expanded to H heads by default (``bias.sdpa_gqa`` "fold"): the query heads
    of a group are folded onto the query axis (``fold_query_heads``), with the bias viewed the same way.
    Every query row is computed as with expanded K/V ("expand", the path before: same keys, same bias values,
    same kernel), so the output is bit for bit the same, and a prefill chunk copies its queries and output
    (2 x B Q H D) instead of writing H/G copies of all cached keys and values (2 x B K H D, K >= Q) per layer.
    """
    if bias.sdpa_gqa == "enable_gqa":
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.dense, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2)
    num_heads, groups = query.shape[1], key.shape[1]
    with sdpa_without_cudnn(query.device):
        if groups == num_heads or bias.sdpa_gqa == "expand":
            return F.scaled_dot_product_attention(query, repeat_kv(key, num_heads), repeat_kv(value, num_heads),
                                                  attn_mask=bias.dense, scale=scaling).transpose(1, 2)
        mask = None if bias.dense is None else fold_bias_heads(bias.dense, groups)
        out = F.scaled_dot_product_attention(fold_query_heads(query, groups), key, value, attn_mask=mask,
                                             scale=scaling)
    return unfold_output_heads(out, num_heads)


_COMPILED_FLEX: Callable | None = None


def _flex_function(device: torch.device) -> Callable:
    """The compiled FlexAttention kernel on CUDA; the unfused reference implementation elsewhere."""
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda" or torch.compiler.is_compiling():  # inside a compiled graph: dynamo lowers it
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention)
    return _COMPILED_FLEX


def alibi_score_mod(slopes: torch.Tensor, positions: AlibiPositions, batch_size: int) -> Callable:
    """FlexAttention ``score_mod`` adding ``-slope[h] * sqrt(pos_q - pos_k)`` and masking as the dense bias does."""
    qpos = positions.query_positions.expand(batch_size, -1)
    kpos = positions.key_positions.expand(batch_size, -1)
    kvalid = positions.key_valid.expand(batch_size, -1)
    qvalid = positions.query_valid.expand(batch_size, -1)

    def score_mod(score, b, h, q_idx, kv_idx):
        distance = qpos[b, q_idx] - kpos[b, kv_idx]
        real_query = qvalid[b, q_idx]
        allowed = (kvalid[b, kv_idx] & (distance >= 0)) | ~real_query
        alibi = slopes[h] * torch.sqrt(distance.clamp(min=0).to(torch.float32))
        shifted = score - torch.where(real_query, alibi, torch.zeros_like(alibi)).to(score.dtype)
        return torch.where(allowed, shifted, float("-inf"))

    return score_mod


def flex_attention_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           bias: Step1AttentionBias, scaling: float) -> torch.Tensor:
    """FlexAttention with the sqrt-ALiBi ``score_mod`` and native GQA. Returns ``[B, Q, H, D]``."""
    score_mod = alibi_score_mod(bias.slopes, bias.positions, query.shape[0])
    flex = _flex_function(query.device)
    out = flex(query, key, value, score_mod=score_mod, scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2)


# --- xformers (through transformers' AttentionInterface) ---------------------------------------------

XFORMERS_REGISTERED = False


def _aligned_bias(bias: torch.Tensor, batch: int, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """``bias`` broadcast to ``[batch, heads, Q, K]`` in ``dtype`` with an aligned key stride (xformers needs it)."""
    q_len, k_len = bias.shape[-2:]
    if bias.dtype == dtype and bias.stride(-2) % ATTN_BIAS_ALIGNMENT == 0 and bias.stride(-1) == 1:
        return bias.expand(batch, heads, q_len, k_len)
    padded = -(-k_len // ATTN_BIAS_ALIGNMENT) * ATTN_BIAS_ALIGNMENT
    storage = torch.empty(batch, heads, q_len, padded, dtype=dtype, device=bias.device)
    out = storage[..., :k_len]
    out.copy_(bias.expand(batch, heads, q_len, k_len))
    return out


def xformers_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                               value: torch.Tensor, attention_mask: torch.Tensor | None,
                               scaling: float | None = None, dropout: float = 0.0,
                               is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers ``AttentionInterface`` function running ``xformers.ops.memory_efficient_attention``.

    query ``[B, H, Q, D]``, key/value ``[B, G, K, D]``; ``attention_mask``: a float additive bias (Step1's
    sqrt-ALiBi bias, or any model's float mask), a boolean keep-mask (transformers' sdpa-style masks), or
    None (then causal when the module is causal). Returns (``[B, Q, H, D]``, None).
    """
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask

    batch, num_heads, q_len, _ = query.shape
    k_len = key.shape[2]
    key, value = repeat_kv(key, num_heads), repeat_kv(value, num_heads)
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
        attn_bias = LowerTriangularFromBottomRightMask() if causal and q_len > 1 else None
    else:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~mask, float("-inf"))
        attn_bias = _aligned_bias(mask, batch, num_heads, query.dtype)
    out = xops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
        attn_bias=attn_bias, p=dropout if module.training else 0.0, scale=scaling,
    )
    return out, None


def xformers_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     bias: Step1AttentionBias, scaling: float) -> torch.Tensor:
    """Step1 through the registered ``xformers`` AttentionInterface entry. Returns ``[B, Q, H, D]``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    fn = ALL_ATTENTION_FUNCTIONS["xformers"]
    out, _ = fn(_NO_TRAINING, query, key, value, bias.dense, scaling=scaling, dropout=0.0)
    return out


class _Inference(torch.nn.Module):
    """Stand-in ``module`` argument for AttentionInterface functions (inference, causal)."""

    is_causal = True

    def __init__(self) -> None:
        super().__init__()
        self.train(False)


_NO_TRAINING = _Inference()


def register_xformers() -> bool:
    """Register ``xformers`` in transformers' AttentionInterface (and its mask function) if xformers imports."""
    global XFORMERS_REGISTERED
    if XFORMERS_REGISTERED:
        return True
    if importlib.util.find_spec("xformers") is None:
        return False
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # a broken install must not break the pack
        logger.info("xformers is installed but does not import (%s); the xformers backend is off", exc)
        return False
    from transformers import AttentionInterface

    AttentionInterface.register("xformers", xformers_attention_forward)
    try:  # generic models build their masks through this; sdpa-style keep-masks are what the function reads
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionMaskInterface.register("xformers", sdpa_mask)
    except ImportError:
        pass
    XFORMERS_REGISTERED = True
    logger.debug("Registered the xformers attention backend with transformers")
    return True


# --- dispatch ---------------------------------------------------------------------------------------

_BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "flex_attention": flex_attention_backend,
    "xformers": xformers_backend,
}


def step1_attention(backend: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    bias: Step1AttentionBias, scaling: float) -> torch.Tensor:
    """Attention for one layer: query ``[B, H, Q, D]``, key/value ``[B, G, K, D]`` -> ``[B, Q, H, D]``."""
    return _BACKENDS[backend](query, key, value, bias, scaling)


register_xformers()
