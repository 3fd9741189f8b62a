"""vq02 ("linguistic") tokens: FunASR's streaming Paraformer encoder (SAN-M) + nearest k-means centroid.

The official ``StepAudioTokenizer.get_vq02_code`` streams 16 kHz audio through FunASR in 240 ms chunks
(``chunk_size=[0, 4, 5]``, encoder look-back 4). What that computes, written out:

* Features: kaldi fbank -> LFR(7, 6) -> CMVN over the whole clip. Streaming emits exactly a prefix of
  these frames: 4 per 3840-sample chunk, the rest from the final chunk (``paraformer_stream.stream_layout``
  replays the streaming front end's bookkeeping in integers, including its one quirk of dropping a short
  tail).
* Encoder input: features * sqrt(D) + sinusoidal position (positions 1..T over the clip).
* Chunk i sees a window of ``5 + n_i`` frames: the 5 frames before it (zeros before the clip) and its
  own ``n_i``. Every SAN-M layer runs on the window alone (the FSMN memory is zero-padded at both ends
  of the window), except that attention also reads cached keys/values: the last 16 (= look-back 4 x 4)
  of the "stride" frames of earlier chunks, where chunk j's stride frames are the first ``n_j`` window
  positions as that chunk computed them. Only the last ``n_i`` outputs of each window are kept.

Because a layer of chunk i depends only on the previous layer of chunk i and the same layer of earlier
chunks, every chunk of every clip runs in parallel, layer by layer (one batched pass of 50 layers,
not 125 x 50 sequential calls for 30 s). Parity with the official outputs is tested to 1e-4.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import HUB_REPO_TOKENIZER, PARAFORMER_SUBDIR, VQ02_CENTROIDS_FILE
from ..file_readers import load_model_array, load_weights_pickle, read_model_yaml_mapping
from .fbank import FbankConfig, ParaformerFrontend, load_cmvn
from .paraformer_stream import ChunkLayout, StreamingConfig, stream_layout

logger = logging.getLogger(__name__)

_LAYER_NORM_EPS = 1e-12  # FunASR's LayerNorm
_POSITION_TIMESCALE = 10000.0


class ParaformerFormatError(ValueError):
    """The Paraformer folder does not hold what the official one holds; the message names the file."""


# --- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SanmEncoderConfig:
    """``encoder_conf`` of the official ``config.yaml`` (SANMEncoderChunkOpt), plus the input width."""

    input_size: int
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    kernel_size: int = 11
    sanm_shift: int = 0

    @classmethod
    def from_config(cls, encoder_conf: Mapping[str, Any], input_size: int) -> SanmEncoderConfig:
        checks = {
            "input_layer": ("pe_online", encoder_conf.get("input_layer", "pe_online")),
            "selfattention_layer_type": ("sanm", encoder_conf.get("selfattention_layer_type", "sanm")),
            "normalize_before": (True, encoder_conf.get("normalize_before", True)),
            "positionwise_layer_type": ("linear", encoder_conf.get("positionwise_layer_type", "linear")),
            "concat_after": (False, encoder_conf.get("concat_after", False)),
        }
        for key, (want, got) in checks.items():
            if got != want:
                raise ParaformerFormatError(
                    f"config.yaml encoder_conf.{key} is {got!r}; only {want!r} "
                    "(the official streaming Paraformer) is supported."
                )
        d = cls(input_size=input_size)
        return cls(
            input_size=input_size,
            output_size=int(encoder_conf.get("output_size", d.output_size)),
            attention_heads=int(encoder_conf.get("attention_heads", d.attention_heads)),
            linear_units=int(encoder_conf.get("linear_units", d.linear_units)),
            num_blocks=int(encoder_conf.get("num_blocks", d.num_blocks)),
            kernel_size=int(encoder_conf.get("kernel_size", d.kernel_size)),
            sanm_shift=int(encoder_conf.get("sanm_shfit", d.sanm_shift)),  # sic: FunASR's spelling
        )


# --- the SAN-M encoder (official parameter names under ``encoder.``) ------------------------------


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.relu(self.w_1(x)))


class _SanmAttention(nn.Module):
    def __init__(self, in_dim: int, dim: int, heads: int, kernel_size: int, shift: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.linear_q_k_v = nn.Linear(in_dim, 3 * dim)
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        self.linear_out = nn.Linear(dim, dim)
        left = (kernel_size - 1) // 2 + shift
        self.fsmn_pad = (left, kernel_size - 1 - left)


class _SanmLayer(nn.Module):
    def __init__(self, in_dim: int, cfg: SanmEncoderConfig):
        super().__init__()
        self.in_dim = in_dim
        self.self_attn = _SanmAttention(in_dim, cfg.output_size, cfg.attention_heads, cfg.kernel_size, cfg.sanm_shift)
        self.feed_forward = _FeedForward(cfg.output_size, cfg.linear_units)
        self.norm1 = nn.LayerNorm(in_dim, eps=_LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(cfg.output_size, eps=_LAYER_NORM_EPS)


@dataclass
class _PackedChunks:
    """Index tensors that lay every chunk of every clip out as one batch of windows (see module doc)."""

    window_src: torch.Tensor  # [G, W] row of the packed input (zero row where invalid)
    window_valid: torch.Tensor  # [G, W] bool
    cache_chunk: torch.Tensor  # [G, C] chunk whose window holds the cached stride frame
    cache_pos: torch.Tensor  # [G, C] position of that frame in its window
    key_valid: torch.Tensor  # [G, C + W] bool
    out_chunk: torch.Tensor  # [sum T] chunk of each output frame
    out_pos: torch.Tensor  # [sum T] window position of each output frame


def _pack_chunks(
    layouts: Sequence[ChunkLayout], streaming: StreamingConfig, device: torch.device
) -> tuple[_PackedChunks, list[int]]:
    """Build gather indices. The packed input is ``[zero row, clip0 frames, clip1 frames, ...]``."""
    ctx, cache = streaming.context_frames, streaming.cache_frames
    width = ctx + max(max(lay.feat_lens) for lay in layouts)
    win_src, win_valid, c_chunk, c_pos, c_valid, o_chunk, o_pos = [], [], [], [], [], [], []
    row0 = 1  # packed row of the current clip's first frame
    g0 = 0  # global index of the current clip's first chunk
    offsets = []
    for lay in layouts:
        lens = np.asarray(lay.feat_lens, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])  # first own frame of each chunk (clip frames)
        k = np.arange(width)
        frame = starts[:, None] - ctx + k[None, :]  # clip frame index shown at window position k
        valid = k[None, :] < (ctx + lens)[:, None]
        src = np.where(valid & (frame >= 0), row0 + frame, 0)
        win_src.append(src)
        win_valid.append(valid)
        # cached stride frames of chunk i: stride positions starts[i]-cache .. starts[i]-1
        p = starts[:, None] - cache + np.arange(cache)[None, :]
        pv = p >= 0
        owner = np.searchsorted(starts, np.where(pv, p, 0), side="right") - 1
        c_chunk.append(np.where(pv, g0 + owner, 0))
        c_pos.append(np.where(pv, p - starts[owner], 0))
        c_valid.append(pv)
        frames = np.arange(lay.num_frames)
        owner = np.searchsorted(starts, frames, side="right") - 1
        o_chunk.append(g0 + owner)
        o_pos.append(ctx + frames - starts[owner])
        offsets.append(lay.num_frames)
        row0 += lay.num_frames
        g0 += len(lens)

    def cat(parts: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts)).to(device=device, dtype=dtype)

    packed = _PackedChunks(
        window_src=cat(win_src, torch.long),
        window_valid=cat(win_valid, torch.bool),
        cache_chunk=cat(c_chunk, torch.long),
        cache_pos=cat(c_pos, torch.long),
        key_valid=torch.cat([cat(c_valid, torch.bool), cat(win_valid, torch.bool)], dim=1),
        out_chunk=cat(o_chunk, torch.long),
        out_pos=cat(o_pos, torch.long),
    )
    return packed, offsets


def stream_position_encoding(num_frames: int, depth: int) -> torch.Tensor:
    """FunASR ``StreamSinusoidalPositionEncoder`` for positions 1..num_frames: ``[num_frames, depth]`` float32 (CPU)."""
    positions = torch.arange(1, num_frames + 1, dtype=torch.float32)
    increment = torch.log(torch.tensor([_POSITION_TIMESCALE], dtype=torch.float32)) / (depth / 2 - 1)
    inv_timescales = torch.exp(torch.arange(depth / 2).to(torch.float32) * (-increment))
    scaled = positions[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class SanmEncoder(nn.Module):
    """FunASR ``SANMEncoderChunkOpt`` in streaming mode. Parameter names are the official ones minus ``encoder.``."""

    def __init__(self, cfg: SanmEncoderConfig):
        super().__init__()
        if cfg.output_size % cfg.attention_heads:
            raise ParaformerFormatError(
                f"output_size {cfg.output_size} is not divisible by attention_heads {cfg.attention_heads}."
            )
        self.cfg = cfg
        self.encoders0 = nn.ModuleList([_SanmLayer(cfg.input_size, cfg)])
        self.encoders = nn.ModuleList([_SanmLayer(cfg.output_size, cfg) for _ in range(cfg.num_blocks - 1)])
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=_LAYER_NORM_EPS)
        self._position_cache = torch.empty(0, cfg.input_size)

    def _positions(self, num_frames: int, device: torch.device) -> torch.Tensor:
        """Position encodings computed on the CPU in float32 as FunASR does, cached on ``device``."""
        cache = self._position_cache
        if cache.shape[0] < num_frames or cache.device != device:
            rows = max(num_frames, cache.shape[0])
            self._position_cache = stream_position_encoding(rows, self.cfg.input_size).to(device)
        return self._position_cache[:num_frames]

    def _layer(self, layer: _SanmLayer, x: torch.Tensor, packed: _PackedChunks) -> torch.Tensor:
        g, w, _ = x.shape
        attn = layer.self_attn
        heads, head_dim = attn.heads, attn.head_dim
        q, k, v = attn.linear_q_k_v(layer.norm1(x)).chunk(3, dim=-1)
        v_win = v * packed.window_valid[..., None].to(v.dtype)
        memory = F.conv1d(F.pad(v_win.transpose(1, 2), attn.fsmn_pad), attn.fsmn_block.weight, groups=v.shape[-1])
        memory = memory.transpose(1, 2) + v_win
        q = q.view(g, w, heads, head_dim).transpose(1, 2) * head_dim**-0.5
        k = k.reshape(g, w, heads, head_dim)
        v = v.reshape(g, w, heads, head_dim)
        keys = torch.cat([k[packed.cache_chunk, packed.cache_pos], k], dim=1).transpose(1, 2)
        values = torch.cat([v[packed.cache_chunk, packed.cache_pos], v], dim=1).transpose(1, 2)
        scores = torch.matmul(q, keys.transpose(-2, -1))
        scores = scores.masked_fill(~packed.key_valid[:, None, None, :], float("-inf"))
        context = torch.matmul(torch.softmax(scores, dim=-1), values)
        out = attn.linear_out(context.transpose(1, 2).reshape(g, w, heads * head_dim)) + memory
        x = x + out if layer.in_dim == out.shape[-1] else out
        return x + layer.feed_forward(layer.norm2(x))

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        layouts: Sequence[ChunkLayout],
        streaming: StreamingConfig = StreamingConfig(),
    ) -> list[torch.Tensor]:
        """Encode clips as the official streaming loop does.

        In: per clip, LFR+CMVN features ``[T_i, input_size]`` (T_i = ``layouts[i].num_frames``).
        Out: per clip, encoder outputs ``[T_i, output_size]`` (the last ``n`` frames of each chunk's window).
        """
        param = self.after_norm.weight
        device, dtype = param.device, param.dtype
        keep = [i for i, lay in enumerate(layouts) if lay.num_frames > 0]
        outs = [torch.empty(0, self.cfg.output_size, device=device, dtype=dtype) for _ in layouts]
        if not keep:
            return outs
        x, packed, lengths = self.encode_windows([feats[i] for i in keep], [layouts[i] for i in keep], streaming)
        flat = x[packed.out_chunk, packed.out_pos]
        for i, part in zip(keep, torch.split(flat, lengths), strict=True):
            outs[i] = part
        return outs

    def encode_windows(
        self,
        feats: Sequence[torch.Tensor],
        layouts: Sequence[ChunkLayout],
        streaming: StreamingConfig = StreamingConfig(),
    ) -> tuple[torch.Tensor, _PackedChunks, list[int]]:
        """Every chunk window of every clip, as FunASR's ``forward_chunk`` returns it: ``[G, W, D]``.

        Chunk g (clips in order, chunks in order) is valid at positions ``packed.window_valid[g]``; its
        window holds the ``context_frames`` frames before its own. The ASR reads whole windows.
        """
        param = self.after_norm.weight
        device, dtype = param.device, param.dtype
        scale = self.cfg.output_size**0.5
        rows = [torch.zeros(1, self.cfg.input_size, device=device, dtype=dtype)]
        for i, (feat, lay) in enumerate(zip(feats, layouts, strict=True)):
            f = feat[: lay.num_frames].to(device=device, dtype=torch.float32)
            if f.shape[0] != lay.num_frames:
                raise ValueError(f"clip {i}: {f.shape[0]} feature frames for a layout of {lay.num_frames}")
            rows.append((f * scale + self._positions(f.shape[0], device)).to(dtype))
        packed, lengths = _pack_chunks(layouts, streaming, device)
        x = torch.cat(rows, dim=0)[packed.window_src]  # [G, W, input_size]
        for layer in list(self.encoders0) + list(self.encoders):
            x = self._layer(layer, x, packed)
        return self.after_norm(x), packed, lengths


def random_sanm_encoder(cfg: SanmEncoderConfig, seed: int = 0) -> SanmEncoder:
    """A SAN-M encoder with seeded random weights (LayerNorm 1+0.1N / 0.1N, Linear and FSMN N(0, 1/fan_in)).

    For tests and benchmarks: outputs stay O(1) through any depth, so codes are not degenerate.
    """
    gen = torch.Generator().manual_seed(seed)
    encoder = SanmEncoder(cfg)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if ".norm" in name or name.startswith("after_norm"):
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
            else:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
    return encoder


def load_encoder_state(model_pt: str | Path) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` tensors of an official Paraformer ``model.pt`` (prefix removed; decoder etc. ignored)."""
    state = load_weights_pickle(model_pt, HUB_REPO_TOKENIZER)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ParaformerFormatError(f"{model_pt} does not hold a state dict. Re-download the Paraformer model.pt.")
    out = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith("encoder."):
            out[key[len("encoder.") :]] = value
    if not out:
        raise ParaformerFormatError(f"{model_pt} has no encoder.* weights. Re-download the Paraformer model.pt.")
    return out


# --- the tokenizer ----------------------------------------------------------------------------------


@dataclass
class Vq02Result:
    """One clip through vq02: ``codes`` [T] int64 (CPU), ``enc_out`` [T, D], ``features`` [T, n_mels*lfr_m]."""

    codes: torch.Tensor
    enc_out: torch.Tensor
    features: torch.Tensor
    layout: ChunkLayout


class Vq02Tokenizer:
    """16 kHz mono clips -> vq02 codes (16.67 Hz), batched over clips, on CPU or CUDA.

    Input: the trimmed 16 kHz ``PreparedAudio.tokenizer_wav`` of each clip. Features are dithered as the
    official FunASR front end (1.0), with noise seeded per clip (``fbank.dither_seed``);
    ``from_folder(dither=0.0)`` turns it off (the parity fixtures' reference ran without dither).
    """

    def __init__(
        self,
        frontend: ParaformerFrontend,
        encoder: SanmEncoder,
        centroids: torch.Tensor,
        streaming: StreamingConfig = StreamingConfig(),
    ):
        if centroids.dim() != 2 or centroids.shape[1] != encoder.cfg.output_size:
            raise ParaformerFormatError(
                f"centroids have shape {tuple(centroids.shape)} but the encoder outputs "
                f"{encoder.cfg.output_size}-d frames; {VQ02_CENTROIDS_FILE} does not belong to this Paraformer."
            )
        if frontend.config.feature_dim != encoder.cfg.input_size:
            raise ParaformerFormatError("front end width and encoder input width differ (config.yaml is inconsistent).")
        param = encoder.after_norm.weight
        self.frontend = frontend
        self.encoder = encoder.eval().requires_grad_(False)
        self.centroids = centroids.to(device=param.device, dtype=torch.float32)
        self.streaming = streaming

    @property
    def device(self) -> torch.device:
        return self.encoder.after_norm.weight.device

    def to(self, device: torch.device | str) -> Vq02Tokenizer:
        """Move the encoder and the centroids (offload / reload)."""
        self.encoder.to(device)
        self.centroids = self.centroids.to(device)
        return self

    @classmethod
    def from_folder(
        cls, tokenizer_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
        dither: float | None = None,
    ) -> Vq02Tokenizer:
        """Load from the official ``Step-Audio-Tokenizer`` folder (centroids + the Paraformer subfolder).

        ``dither``: None = as config.yaml says (FunASR's default 1.0 when it says nothing); 0 = off.
        """
        tokenizer_dir = Path(tokenizer_dir)
        para_dir = tokenizer_dir / PARAFORMER_SUBDIR
        needed = [
            tokenizer_dir / VQ02_CENTROIDS_FILE,
            para_dir / "config.yaml",
            para_dir / "am.mvn",
            para_dir / "model.pt",
        ]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Step-Audio-Tokenizer files missing: {', '.join(missing)}. Download stepfun-ai/Step-Audio-Tokenizer."
            )
        config = read_model_yaml_mapping(para_dir / "config.yaml", HUB_REPO_TOKENIZER)
        fbank = FbankConfig.from_config(config.get("frontend_conf", {}))
        if dither is not None:
            fbank = dataclasses.replace(fbank, dither=float(dither))
        enc_cfg = SanmEncoderConfig.from_config(config.get("encoder_conf", {}), fbank.feature_dim)
        encoder = SanmEncoder(enc_cfg)
        state = load_encoder_state(para_dir / "model.pt")
        result = encoder.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ParaformerFormatError(
                f"{para_dir / 'model.pt'} does not match config.yaml: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}."
            )
        centroids = torch.from_numpy(load_model_array(tokenizer_dir / VQ02_CENTROIDS_FILE, HUB_REPO_TOKENIZER)
                                     .astype(np.float32))
        encoder = encoder.to(device=device, dtype=dtype)
        logger.info(
            "vq02 Paraformer loaded: %d blocks, width %d, on %s", enc_cfg.num_blocks, enc_cfg.output_size, device
        )
        return cls(ParaformerFrontend(fbank, load_cmvn(para_dir / "am.mvn")), encoder, centroids)

    def layout(self, num_samples: int) -> ChunkLayout:
        return stream_layout(num_samples, self.frontend.config, self.streaming)

    def features(self, wav16k: torch.Tensor) -> tuple[torch.Tensor, ChunkLayout]:
        """The LFR + CMVN frames streaming feeds the encoder ``[T, n_mels*lfr_m]``, and the chunk layout."""
        if wav16k.dim() != 1:
            raise ValueError(f"vq02 takes mono 16 kHz clips [samples], got shape {tuple(wav16k.shape)}")
        layout = self.layout(wav16k.shape[0])
        feats = self.frontend(wav16k.to(device=self.device, dtype=torch.float32))
        return feats[: layout.num_frames], layout

    @torch.inference_mode()
    def encode_detailed(self, wavs: Sequence[torch.Tensor]) -> list[Vq02Result]:
        """Codes plus encoder outputs and features for each clip (one batched encoder pass)."""
        prepared = [self.features(w) for w in wavs]
        enc = self.encoder([f for f, _ in prepared], [lay for _, lay in prepared], self.streaming)
        lengths = [e.shape[0] for e in enc]
        flat = torch.cat(enc, dim=0).to(torch.float32)
        codes = (
            torch.cdist(flat, self.centroids).argmin(dim=-1).cpu()
            if flat.shape[0]
            else torch.empty(0, dtype=torch.long)
        )
        return [
            Vq02Result(codes=c, enc_out=e, features=f, layout=lay)
            for c, e, (f, lay) in zip(torch.split(codes, lengths), enc, prepared, strict=True)
        ]

    def encode(self, wavs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """vq02 codes per clip: int64 ``[T]`` on CPU (T = 4 per 240 ms, the tail as the official code cuts it)."""
        return [r.codes for r in self.encode_detailed(wavs)]
