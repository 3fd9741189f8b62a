"""Transcription with the Paraformer of Step-Audio-Tokenizer: streaming encoder -> CIF -> decoder -> text,
with per-token timestamps from the CIF firing positions. No FunASR at run time.

The clip is streamed as FunASR's ``ParaformerStreaming.inference`` streams it (``chunk_size`` (0, 10, 5),
encoder look-back 4, decoder look-back 1, greedy), but every chunk of every clip runs in one batched pass.

Timestamps: token ``k`` fires at LFR frame ``f_k`` (60 ms frames). It ends at the end of that frame and
starts at the first frame after ``f_(k-1)`` whose CIF weight reaches ``ASR_SPEECH_ALPHA`` (so pauses
before a word are not counted in it). Parity with FunASR's tokens and firing positions is tested.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml

from ..constants import (
    ASR_CHUNK_SIZE,
    ASR_DECODER_LOOK_BACK,
    ASR_ENCODER_LOOK_BACK,
    ASR_SPEECH_ALPHA,
    ASR_TAIL_CHUNK_SAMPLES,
    PARAFORMER_SUBDIR,
    TOKENIZER_SAMPLE_RATE,
)
from ..frontend.audio import resample, to_mono
from ..frontend.fbank import FbankConfig, ParaformerFrontend, load_cmvn
from ..frontend.paraformer import ParaformerFormatError, SanmEncoder, SanmEncoderConfig, load_encoder_state
from ..frontend.paraformer_stream import ChunkLayout, StreamingConfig, stream_layout
from .cif import CifChunk, CifResult, integrate
from .decode import decode_logits, plan_decode
from .model import CifConfig, CifPredictor, DecoderConfig, ParaformerDecoder, load_strict, split_state
from .text import Word, postprocess, timed_words

logger = logging.getLogger(__name__)

ASR_STREAMING = StreamingConfig(chunk_size=ASR_CHUNK_SIZE, encoder_look_back=ASR_ENCODER_LOOK_BACK)


@dataclass(frozen=True)
class Transcript:
    """What a clip says: the text (FunASR's post-processing), its tokens with spans in seconds, and words."""

    text: str
    pieces: tuple[str, ...]
    token_ids: tuple[int, ...]
    spans: tuple[tuple[float, float], ...]
    words: tuple[Word, ...]
    duration: float
    fire_frames: tuple[int, ...] = field(default=(), repr=False)  # every fired token, blanks included


def asr_layout(num_samples: int, fbank: FbankConfig, streaming: StreamingConfig = ASR_STREAMING) -> tuple[ChunkLayout, int]:
    """Frames per streamed chunk as ``ParaformerStreaming.inference`` feeds them, and the number of chunks.

    A final piece shorter than ``ASR_TAIL_CHUNK_SAMPLES`` never reaches the front end: the last call
    decodes only the cached look-ahead frames (a chunk of 0 new frames).
    """
    stride = streaming.stride_samples
    full = num_samples // stride
    if num_samples - full * stride < ASR_TAIL_CHUNK_SAMPLES:
        if full == 0:
            return ChunkLayout((), streaming.context_frames), 0
        lens = stream_layout(full * stride, fbank, streaming, final=False).feat_lens + (0,)
    else:
        lens = stream_layout(num_samples, fbank, streaming).feat_lens
        lens += (0,) * (full + 1 - len(lens))  # a final call that yields no new frame decodes the look-ahead
    return ChunkLayout(lens, streaming.context_frames), len(lens)


def _load_tokens(path: Path) -> list[str]:
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParaformerFormatError(f"{path} is not a JSON token list ({exc}). Re-download tokens.json.") from exc
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ParaformerFormatError(f"{path} must hold a JSON list of strings. Re-download tokens.json.")
    return tokens


class Transcriber:
    """Batched speech recognition on CPU or CUDA; shares the SAN-M encoder with vq02 when given one."""

    def __init__(self, frontend: ParaformerFrontend, encoder: SanmEncoder, predictor: CifPredictor,
                 decoder: ParaformerDecoder, tokens: Sequence[str], special: tuple[int, int, int] = (0, 1, 2),
                 streaming: StreamingConfig = ASR_STREAMING, decoder_look_back: int = ASR_DECODER_LOOK_BACK):
        if decoder.cfg.vocab_size != len(tokens):
            raise ParaformerFormatError(
                f"tokens.json has {len(tokens)} tokens but the decoder predicts {decoder.cfg.vocab_size}: "
                "tokens.json and model.pt do not belong together."
            )
        self.frontend = frontend
        self.encoder = encoder
        self.predictor = predictor.eval().requires_grad_(False)
        self.decoder = decoder.eval().requires_grad_(False)
        self.tokens = list(tokens)
        self.blank_id, self.sos_id, self.eos_id = special
        self.streaming = streaming
        self.decoder_look_back = decoder_look_back

    @property
    def device(self) -> torch.device:
        return self.decoder.output_layer.weight.device

    def to(self, device: torch.device | str) -> Transcriber:
        """Move the predictor and decoder (the encoder moves with its owner)."""
        self.predictor.to(device)
        self.decoder.to(device)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"asr_predictor": self.predictor, "asr_decoder": self.decoder}

    @classmethod
    def from_folder(cls, tokenizer_dir: str | Path, device: torch.device | str = "cpu",
                    encoder: SanmEncoder | None = None, dither: float | None = None) -> Transcriber:
        """Load from ``Step-Audio-Tokenizer`` (its Paraformer subfolder); ``encoder``: reuse vq02's encoder.

        ``dither``: None = as config.yaml says (FunASR's 1.0, seeded per clip: reproducible); 0 = off (the
        parity fixtures were made that way)."""
        para = Path(tokenizer_dir) / PARAFORMER_SUBDIR
        needed = [para / n for n in ("config.yaml", "am.mvn", "model.pt", "tokens.json")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Paraformer files missing for transcription: {', '.join(missing)}. Download stepfun-ai/Step-Audio-Tokenizer."
            )
        config = yaml.safe_load((para / "config.yaml").read_text(encoding="utf-8"))
        fbank = FbankConfig.from_config(config.get("frontend_conf", {}))
        if dither is not None:
            fbank = dataclasses.replace(fbank, dither=float(dither))
        tokens = _load_tokens(para / "tokens.json")
        if encoder is None:
            encoder = SanmEncoder(SanmEncoderConfig.from_config(config.get("encoder_conf", {}), fbank.feature_dim))
            load_strict(encoder, load_encoder_state(para / "model.pt"), "encoder", para / "model.pt")
            encoder = encoder.to(device).eval().requires_grad_(False)
        width = encoder.cfg.output_size
        predictor = CifPredictor(CifConfig.from_config(config.get("predictor_conf", {}), width))
        load_strict(predictor, split_state(para / "model.pt", "predictor"), "predictor", para / "model.pt")
        decoder = ParaformerDecoder(DecoderConfig.from_config(config.get("decoder_conf", {}), len(tokens), width))
        load_strict(decoder, split_state(para / "model.pt", "decoder"), "decoder", para / "model.pt")
        model_conf = config.get("model_conf", {}) or {}
        special = (int(model_conf.get("blank_id", 0)), int(model_conf.get("sos", 1)), int(model_conf.get("eos", 2)))
        logger.info("Paraformer recogniser loaded: %d tokens, %d decoder layers", len(tokens), decoder.cfg.num_blocks)
        return cls(ParaformerFrontend(fbank, load_cmvn(para / "am.mvn")), encoder,
                   predictor.to(device), decoder.to(device), tokens, special)

    # -- work -----------------------------------------------------------------------------------------
    def transcribe_audio(self, clips: Sequence[tuple[torch.Tensor, int]]) -> list[Transcript]:
        """Clips at any rate, mono or ``[C, T]`` -> transcripts (resampled to 16 kHz, not normalised)."""
        wavs = []
        for wav, rate in clips:
            mono = to_mono(torch.as_tensor(wav)).to(torch.float32)
            wavs.append(mono if rate == TOKENIZER_SAMPLE_RATE else resample(mono, int(rate), TOKENIZER_SAMPLE_RATE))
        return self.transcribe(wavs)

    @torch.inference_mode()
    def transcribe(self, wavs16k: Sequence[torch.Tensor]) -> list[Transcript]:
        """16 kHz mono clips -> one transcript each, all clips in one batched pass."""
        cfg = self.frontend.config
        frame_s = cfg.frame_shift_ms * cfg.lfr_n / 1000.0
        layouts, feats = [], []
        for w in wavs16k:
            layout, _ = asr_layout(int(w.shape[-1]), cfg, self.streaming)
            layouts.append(layout)
            feats.append(self.frontend(w.to(self.encoder.after_norm.weight.device, torch.float32))[: layout.num_frames]
                         if layout.feat_lens else None)
        keep = [i for i, lay in enumerate(layouts) if lay.feat_lens]
        results: list[Transcript] = [self._empty(w) for w in wavs16k]
        if not keep:
            return results
        windows, packed, _ = self.encoder.encode_windows([feats[i] for i in keep], [layouts[i] for i in keep],
                                                         self.streaming)
        windows = (windows * packed.window_valid[..., None].to(windows.dtype)).to(self.device, torch.float32)
        alphas = self.predictor.alphas(windows).float().cpu().numpy()
        ctx, (c0, c1, _) = self.streaming.context_frames, self.streaming.chunk_size
        cifs, offsets, window_lens, g0 = [], [], [], 0
        for i in keep:
            lens = layouts[i].feat_lens
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(int)
            chunks = [CifChunk(ctx + n, int(s) - ctx, c == len(lens) - 1) for c, (n, s) in enumerate(zip(lens, starts))]
            cif = self.predictor.cfg
            cifs.append(integrate(alphas[g0:g0 + len(lens)], chunks, (c0, c1, ctx - c0), cif.threshold,
                                  cif.tail_threshold, layouts[i].num_frames))
            offsets.append(g0)
            window_lens.append([c.window_len for c in chunks])
            g0 += len(lens)
        ids = self._decode(windows, cifs, offsets, window_lens)
        for i, cif, tok in zip(keep, cifs, ids):
            results[i] = self._transcript(tok, cif, frame_s, wavs16k[i].shape[-1] / TOKENIZER_SAMPLE_RATE)
        return results

    def _decode(self, windows: torch.Tensor, cifs: list[CifResult], offsets: list[int],
                window_lens: list[list[int]]) -> list[np.ndarray]:
        counts = [c.num_tokens for c in cifs]
        total = sum(counts)
        if total == 0:
            return [np.zeros(0, dtype=np.int64) for _ in cifs]
        d = windows.shape[-1]
        embeds = torch.zeros(total, d, device=windows.device, dtype=windows.dtype)
        base = 0
        for cif, off in zip(cifs, offsets):
            if cif.contrib_token.size:
                tok = torch.as_tensor(cif.contrib_token + base, device=windows.device)
                rows = windows[torch.as_tensor(cif.contrib_chunk + off, device=windows.device),
                               torch.as_tensor(cif.contrib_pos, device=windows.device)]
                weight = torch.as_tensor(cif.contrib_weight, device=windows.device)[:, None]
                embeds.index_add_(0, tok, weight * rows)
            base += cif.num_tokens
        plan = plan_decode([c.token_chunk for c in cifs], offsets, window_lens,
                           self.decoder_look_back * self.streaming.chunk_size[1], windows.device)
        ids = decode_logits(self.decoder, embeds, windows, plan).argmax(dim=-1).cpu().numpy()
        return np.split(ids, np.cumsum(counts)[:-1])

    def _transcript(self, ids: np.ndarray, cif: CifResult, frame_s: float, duration: float) -> Transcript:
        spans = token_spans(cif.fire_frame, cif.frame_alpha, frame_s, duration)
        keep = [k for k, t in enumerate(ids.tolist()) if t not in (self.blank_id, self.sos_id, self.eos_id)]
        pieces = [self.tokens[int(ids[k])] for k in keep]
        kept_spans = [spans[k] for k in keep]
        return Transcript(
            text=postprocess(pieces), pieces=tuple(pieces), token_ids=tuple(int(ids[k]) for k in keep),
            spans=tuple(kept_spans), words=tuple(timed_words(pieces, kept_spans)), duration=duration,
            fire_frames=tuple(int(f) for f in cif.fire_frame),
        )

    @staticmethod
    def _empty(wav: torch.Tensor) -> Transcript:
        return Transcript("", (), (), (), (), wav.shape[-1] / TOKENIZER_SAMPLE_RATE)


def token_spans(fire_frames: np.ndarray, frame_alpha: np.ndarray, frame_s: float,
                duration: float, speech_alpha: float = ASR_SPEECH_ALPHA) -> list[tuple[float, float]]:
    """(start, end) seconds of each fired token (see the module doc), rounded to the millisecond."""
    spans = []
    prev = -1
    num_frames = frame_alpha.shape[0]
    for fire in fire_frames.tolist():
        last = min(fire, num_frames - 1)
        start = prev + 1
        while start < last and frame_alpha[start] < speech_alpha:
            start += 1
        start = min(start, last) if last >= 0 else 0
        begin = min(max(start, 0) * frame_s, duration)
        end = min((fire + 1) * frame_s, duration)
        spans.append((round(begin, 3), round(max(end, begin), 3)))
        prev = max(prev, fire)
    return spans
