"""Key-padding self-attention with interchangeable backends (the DiT estimator's attention).

The DiT has no positional bias: attention is ``softmax(q k^T / sqrt(D)) v`` over the keys of the
row's own clip. Backends differ in speed only:

* ``flash_attention_2`` / ``xformers``: run on the unpadded tokens (varlen), so padding costs nothing;
  flash-attn needs fp16/bf16 (an fp32 model falls back to sdpa, logged once).
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with a boolean key mask
  (no mask at all when no row is padded, which lets it pick its flash kernel).
* ``eager``: the reference math.

Padded query rows come out as zeros (varlen) or as attention over valid keys (sdpa/eager); they are
discarded by the caller either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..sdpa_kernels import sdpa_without_cudnn

logger = logging.getLogger(__name__)

DIT_BACKENDS = ("flash_attention_2", "xformers", "sdpa", "eager")
_warned_fp32_flash = False


@dataclass
class KeyPadding:
    """Valid lengths of the rows of a right-padded batch ``[B, T, ...]``.

    ``mask`` is ``[B, T]`` bool (True = real token) or None when every row is full length.
    Lengths are Python ints so kernels that need ``max_seqlen`` cause no host sync.
    """

    lengths: tuple[int, ...]
    max_len: int
    device: torch.device
    mask: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], device: torch.device | str, max_len: int | None = None) -> KeyPadding:
        lengths = tuple(int(n) for n in lengths)
        max_len = max(lengths) if max_len is None else int(max_len)
        device = torch.device(device)
        mask = None
        if any(n != max_len for n in lengths):
            mask = torch.arange(max_len, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
        return cls(lengths=lengths, max_len=max_len, device=device, mask=mask)

    def repeat(self, times: int) -> KeyPadding:
        """The padding of ``torch.cat([batch] * times)`` (classifier-free guidance doubles the batch)."""
        return KeyPadding.from_lengths(self.lengths * times, self.device, self.max_len)

    @property
    def is_padded(self) -> bool:
        return self.mask is not None

    def float_mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        """``[B, T, 1]`` 1.0 / 0.0 mask in ``dtype`` (None when nothing is padded)."""
        if self.mask is None:
            return None
        key = ("float", dtype)
        if key not in self._cache:
            self._cache[key] = self.mask.to(dtype).unsqueeze(-1)
        return self._cache[key]

    def unpad_indices(self) -> torch.Tensor:
        if "idx" not in self._cache:
            assert self.mask is not None
            self._cache["idx"] = self.mask.reshape(-1).nonzero().squeeze(1)
        return self._cache["idx"]

    def cu_seqlens(self) -> torch.Tensor:
        if "cu" not in self._cache:
            lens = torch.tensor((0,) + self.lengths, dtype=torch.int32, device=self.device)
            self._cache["cu"] = torch.cumsum(lens, 0, dtype=torch.int32)
        return self._cache["cu"]


def _eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
    # q, k, v: [B, H, T, D]
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if padding is not None and padding.mask is not None:
        scores = scores.masked_fill(~padding.mask[:, None, None, :], float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None) -> torch.Tensor:
    mask = None
    if padding is not None and padding.mask is not None:
        mask = padding.mask[:, None, None, :]
    with sdpa_without_cudnn(q.device):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _varlen(q, k, v, padding: KeyPadding | None, run) -> torch.Tensor:
    # q, k, v: [B, T, H, D]; run(q, k, v, lengths) works on packed [total, H, D]
    b, t, h, d = q.shape
    if padding is None or padding.mask is None:
        return run(q, k, v, None)
    idx = padding.unpad_indices()
    pack = lambda x: x.reshape(b * t, h, d).index_select(0, idx)
    out = run(pack(q), pack(k), pack(v), padding)
    full = q.new_zeros(b * t, h, out.shape[-1])
    full.index_copy_(0, idx, out)
    return full.view(b, t, h, -1)


def _flash(q, k, v, padding):
    from flash_attn import flash_attn_func, flash_attn_varlen_func  # optional dependency

    def run(q, k, v, pad):
        if pad is None:
            return flash_attn_func(q, k, v)
        cu = pad.cu_seqlens()
        return flash_attn_varlen_func(q, k, v, cu, cu, pad.max_len, pad.max_len)

    return _varlen(q, k, v, padding, run)


def _xformers(q, k, v, padding):
    from xformers.ops import fmha, memory_efficient_attention  # optional dependency

    def run(q, k, v, pad):
        if pad is None:
            return memory_efficient_attention(q, k, v)
        bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(list(pad.lengths))
        return memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)[0]

    return _varlen(q, k, v, padding, run)


def key_padding_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: KeyPadding | None, backend: str
) -> torch.Tensor:
    """Self-attention over unpadded keys. ``q, k, v``: ``[B, T, H, D]`` -> ``[B, T, H, D]``."""
    global _warned_fp32_flash
    if backend == "flash_attention_2" and q.dtype not in (torch.float16, torch.bfloat16):
        if not _warned_fp32_flash:
            logger.info("flash-attn needs fp16/bf16; the %s DiT attention runs through sdpa instead", q.dtype)
            _warned_fp32_flash = True
        backend = "sdpa"
    if backend == "flash_attention_2":
        return _flash(q, k, v, padding)
    if backend == "xformers":
        return _xformers(q, k, v, padding)
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    if backend == "sdpa":
        out = _sdpa(qh, kh, vh, padding)
    elif backend == "eager":
        out = _eager(qh, kh, vh, padding)
    else:
        raise ValueError(f"Unknown DiT attention backend {backend!r}; one of {', '.join(DIT_BACKENDS)}.")
    return out.transpose(1, 2)
