"""The Paraformer decoder as FunASR's ``ParaformerSANMDecoder.forward_chunk`` runs it, for every chunk of
every clip at once.

What the chunked decoder computes, written out (decoder look-back ``b``, chunk ``chunk_size[1] = c``):

* The FSMN of each layer is causal (left padding ``kernel - 1``) and its cache carries the previous
  tokens, so over a clip it is one causal convolution over all tokens fired so far.
* Cross-attention of the tokens fired in a chunk reads that chunk's whole encoder window plus, for
  ``b > 0``, the last ``b * c`` memory rows of the previous chunk that fired tokens (chunks that fire
  nothing never reach the decoder, so they do not move the cache).

So a clip decodes as one token sequence with a per-chunk memory, and all clips in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..frontend.paraformer import ParaformerFormatError
from .model import ParaformerDecoder


@dataclass
class DecodePlan:
    """Index tensors of one batched decode. Tokens are flat over clips (clip 0's tokens first)."""

    token_clip: torch.Tensor  # [N]
    token_slot: torch.Tensor  # [N] position in its clip's sequence
    token_group: torch.Tensor  # [N] decoded chunk (memory group) of the token
    token_group_slot: torch.Tensor  # [N] position among its group's tokens
    memory_chunk: torch.Tensor  # [J, M] encoder window (global chunk) of each memory row
    memory_pos: torch.Tensor  # [J, M] position in that window
    memory_valid: torch.Tensor  # [J, M] bool
    num_clips: int
    max_tokens: int  # longest clip sequence
    max_group_tokens: int


def plan_decode(
    token_chunks: list[np.ndarray],
    chunk_offsets: list[int],
    window_lens: list[list[int]],
    memory_cache_rows: int,
    device: torch.device,
) -> DecodePlan:
    """Build the decode plan. ``token_chunks[i]``: clip i's chunk (local index) per fired token;
    ``chunk_offsets[i]``: global index of clip i's first chunk; ``window_lens[i][c]``: valid window rows."""
    t_clip, t_slot, t_group, t_gslot = [], [], [], []
    groups: list[list[tuple[int, int]]] = []
    for i, chunks in enumerate(token_chunks):
        cache: list[tuple[int, int]] = []
        last = -1
        slot_in_group = 0
        for slot, c in enumerate(chunks.tolist()):
            if c != last:  # a new decoded chunk: its memory is the cache plus its window
                rows = cache + [(chunk_offsets[i] + c, p) for p in range(window_lens[i][c])]
                cache = rows[-memory_cache_rows:] if memory_cache_rows > 0 else []
                groups.append(rows)
                last, slot_in_group = c, 0
            t_clip.append(i)
            t_slot.append(slot)
            t_group.append(len(groups) - 1)
            t_gslot.append(slot_in_group)
            slot_in_group += 1
    m = max((len(r) for r in groups), default=1)
    mem_chunk = np.zeros((max(len(groups), 1), m), dtype=np.int64)
    mem_pos = np.zeros_like(mem_chunk)
    mem_valid = np.zeros(mem_chunk.shape, dtype=bool)
    for j, rows in enumerate(groups):
        for k, (g, p) in enumerate(rows):
            mem_chunk[j, k], mem_pos[j, k], mem_valid[j, k] = g, p, True

    def t(values, dtype=torch.long) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

    counts = np.bincount(np.asarray(t_group, dtype=np.int64), minlength=1) if t_group else np.ones(1, np.int64)
    return DecodePlan(
        token_clip=t(t_clip), token_slot=t(t_slot), token_group=t(t_group), token_group_slot=t(t_gslot),
        memory_chunk=t(mem_chunk), memory_pos=t(mem_pos), memory_valid=t(mem_valid, torch.bool),
        num_clips=len(token_chunks), max_tokens=max((len(c) for c in token_chunks), default=0),
        max_group_tokens=int(counts.max()),
    )



def decode_logits(
    decoder: ParaformerDecoder, embeds: torch.Tensor, windows: torch.Tensor, plan: DecodePlan
) -> torch.Tensor:
    """Token embeddings ``[N, D]`` (CIF output) + encoder windows ``[G, W, D]`` -> logits ``[N, vocab]``."""
    cfg = decoder.cfg
    if cfg.kernel_size - 1 - cfg.fsmn_left != 0:
        raise ParaformerFormatError(
            f"decoder kernel_size {cfg.kernel_size} with sanm_shfit {cfg.sanm_shift} is not causal; "
            "only the official streaming decoder layout (right padding 0) is supported."
        )
    if decoder.decoders2 is not None and len(decoder.decoders2) > 1:
        raise ParaformerFormatError("decoder layers without cross-attention (decoders2) are not supported.")
    n, d = embeds.shape
    heads = cfg.attention_heads
    hd = d // heads
    j, m = plan.memory_chunk.shape
    memory = windows[plan.memory_chunk, plan.memory_pos]  # [J, M, D]
    key_mask = plan.memory_valid[:, None, None, :]
    seq = torch.zeros(plan.num_clips, plan.max_tokens, d, device=embeds.device, dtype=embeds.dtype)
    grouped = torch.zeros(j, plan.max_group_tokens, d, device=embeds.device, dtype=embeds.dtype)
    x = embeds
    for layer in decoder.streaming_layers:
        h = layer.feed_forward(layer.norm1(x))
        h = layer.norm2(h)
        seq = seq.zero_()
        seq[plan.token_clip, plan.token_slot] = h
        conv = F.conv1d(F.pad(seq.transpose(1, 2), (cfg.fsmn_left, 0)), layer.self_attn.fsmn_block.weight, groups=d)
        x = x + conv.transpose(1, 2)[plan.token_clip, plan.token_slot] + h
        attn = layer.src_attn
        q = attn.linear_q(layer.norm3(x))
        grouped = grouped.zero_()
        grouped[plan.token_group, plan.token_group_slot] = q
        k, v = attn.linear_k_v(memory).split(d, dim=-1)
        qh = grouped.view(j, -1, heads, hd).transpose(1, 2) * hd**-0.5
        kh = k.reshape(j, m, heads, hd).transpose(1, 2)
        vh = v.reshape(j, m, heads, hd).transpose(1, 2)
        scores = torch.matmul(qh, kh.transpose(-2, -1)).masked_fill(~key_mask, float("-inf"))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2).reshape(j, -1, d)
        x = x + attn.linear_out(ctx[plan.token_group, plan.token_group_slot])
    for layer in decoder.decoders3:
        x = layer.feed_forward(layer.norm1(x))  # FunASR: the last layer has no residual
    return decoder.output_layer(decoder.after_norm(x))
