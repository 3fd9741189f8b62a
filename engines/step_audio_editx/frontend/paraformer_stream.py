"""The official vq02 tokenizer's streaming, replayed in integers: which LFR frames each 240 ms chunk feeds the
SAN-M encoder (FunASR's ``WavFrontendOnline`` + ``infer_encoder`` loop), so one batched whole-clip pass can
reproduce the streamed result (``paraformer``) and the recogniser can cut its chunks the same way (``asr``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import (
    PARAFORMER_CHUNK_SIZE,
    PARAFORMER_ENCODER_LOOK_BACK,
    PARAFORMER_MIN_TAIL_SAMPLES,
    PARAFORMER_SAMPLES_PER_CHUNK_UNIT,
)
from .fbank import FbankConfig


@dataclass(frozen=True)
class StreamingConfig:
    """How the official tokenizer streams: chunk_size (left, chunk, overlap) in LFR frames, look-back in chunks."""

    chunk_size: tuple[int, int, int] = PARAFORMER_CHUNK_SIZE
    encoder_look_back: int = PARAFORMER_ENCODER_LOOK_BACK
    samples_per_chunk_unit: int = PARAFORMER_SAMPLES_PER_CHUNK_UNIT
    min_tail_samples: int = PARAFORMER_MIN_TAIL_SAMPLES

    @property
    def stride_samples(self) -> int:
        """Samples per streamed chunk (3840 = 240 ms)."""
        return self.chunk_size[1] * self.samples_per_chunk_unit

    @property
    def context_frames(self) -> int:
        """Frames carried from the previous window into the next (chunk_size[0] + chunk_size[2] = 5)."""
        return self.chunk_size[0] + self.chunk_size[2]

    @property
    def cache_frames(self) -> int:
        """Cached key/value frames each layer attends to besides its window (look-back x chunk = 16)."""
        return self.encoder_look_back * self.chunk_size[1]


@dataclass(frozen=True)
class ChunkLayout:
    """Per streamed chunk, the LFR frames it feeds the encoder (``feat_lens``) and the window it encodes."""

    feat_lens: tuple[int, ...]
    context_frames: int

    @property
    def enc_lens(self) -> tuple[int, ...]:
        """Encoder output length per chunk (context + own frames), as FunASR reports it."""
        return tuple(self.context_frames + n for n in self.feat_lens)

    @property
    def num_frames(self) -> int:
        return sum(self.feat_lens)


def stream_layout(
    num_samples: int, fbank: FbankConfig, streaming: StreamingConfig = StreamingConfig(), final: bool = True
) -> ChunkLayout:
    """LFR frames per chunk that official streaming emits for a clip of ``num_samples`` (16 kHz, is_final).

    The emitted frames are always a prefix of the whole-clip LFR frames; this returns how many per chunk.
    ``final=False``: the samples are whole chunks none of which is the last call (held-back frames stay held).
    """
    stride = streaming.stride_samples
    shift = fbank.frame_shift_samples
    m, n = fbank.lfr_m, fbank.lfr_n
    left = (m - 1) // 2
    num_chunks = num_samples // stride + 1 if final else num_samples // stride
    input_cache = 0  # samples not yet framed
    splice: int | None = None  # frames held back for the next LFR window
    lens: list[int] = []
    last = final
    for i in range(num_chunks):
        final = last and i == num_chunks - 1
        chunk = min(stride, num_samples - i * stride)
        if final and chunk == 0:
            break
        total = input_cache + chunk
        frames = fbank.num_fbank_frames(total)
        input_cache = total - frames * shift if frames else total
        emitted = 0
        if frames:
            splice = left if splice is None else splice
            if frames + splice >= m:  # LFR over [held-back frames, new frames]
                t = splice + frames
                t_lfr = -(-(t - left) // n)
                full = min(t_lfr, (t - m) // n + 1)  # windows with all m frames present
                emitted = t_lfr if final else full  # the final chunk pads its last windows
                splice = t - min(t - 1, (t_lfr if final or full == t_lfr else full) * n)
            else:  # too few frames for one window: held back; a final chunk then emits nothing
                splice += frames
        elif final and splice is not None:  # tail too short for a new frame: flush the held-back frames
            emitted = max(-(-(splice - left) // n), 0)
        if emitted == 0:
            if final:
                break
            raise RuntimeError(f"streaming chunk {i} of a {num_samples}-sample clip yields no frames")  # not for 240 ms
        lens.append(emitted)
    return ChunkLayout(feat_lens=tuple(lens), context_frames=streaming.context_frames)
