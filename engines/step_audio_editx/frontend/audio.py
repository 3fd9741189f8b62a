"""Audio preparation for the tokenizers, the speaker encoder and the decoder prompt, as the official code does it.

Official flow (``tts.py`` ``preprocess_prompt_wav``, used for both clone prompts and edit inputs):

1. load, mix to mono (channel mean);
2. cap the peak at 0.6 (``x / peak * 0.6`` when the peak is above 0.6), at the source rate;
3. from that capped wav, three consumers:
   * vq02 + vq06: ``preprocess_wav`` = resample to 16 kHz (``torchaudio.transforms.Resample``), peak
     normalisation to 0.999 (``energy_norm_fn``), silence trimming (``trim_silence``);
   * CAM++ speaker embedding: ``torchaudio.functional.resample`` to 16 kHz, untrimmed;
   * the decoder prompt mel: ``torchaudio.functional.resample`` to 24 kHz, untrimmed.

The two torchaudio resamplers differ in the last bits (the transform builds its kernel in float64, the
function in the input dtype); both are reproduced. Unlike the official code, 8 kHz input works (the
official ``resample_audio`` asserts the rate is above 16 kHz), and bad input raises ``AudioInputError``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ..constants import (
    EDIT_INPUT_PEAK,
    GROUP_SECONDS,
    MAX_INPUT_SAMPLE_RATE,
    MAX_INPUT_SECONDS,
    MIN_INPUT_SAMPLE_RATE,
    MIN_INPUT_SECONDS,
    OUTPUT_SAMPLE_RATE,
    PEAK_NORM_FLOOR,
    PEAK_NORM_TARGET,
    SILENT_PEAK,
    TOKENIZER_SAMPLE_RATE,
    TRIM_AMIN,
    TRIM_FRAME_LENGTH,
    TRIM_HOP_LENGTH,
    TRIM_KEEP_LEFT_SECONDS,
    TRIM_KEEP_RIGHT_SECONDS,
    TRIM_ROUND_SAMPLES,
    TRIM_TOP_DB,
)

ArrayLike = torch.Tensor | np.ndarray


class AudioInputError(ValueError):
    """The audio given cannot be used; the message says what was wrong and what to do."""


# --- loading and checking ----------------------------------------------------------------------


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file as float32 ``[channels, samples]`` plus its sample rate (no resampling)."""
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"audio file not found: {path}. Check the path.")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        reason = str(exc).rsplit(": ", 1)[-1].strip().rstrip(".") or type(exc).__name__
        empty = " (the file is empty)" if path.stat().st_size == 0 else ""
        raise AudioInputError(f"cannot read audio file {path}: {reason}{empty}. Use a WAV, FLAC or OGG file.") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def _as_float_tensor(wav: ArrayLike) -> torch.Tensor:
    if isinstance(wav, np.ndarray):
        if np.issubdtype(wav.dtype, np.integer):
            scale = float(np.iinfo(wav.dtype).max) + 1.0
            wav = wav.astype(np.float32) / scale
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if not isinstance(wav, torch.Tensor):
        raise AudioInputError(f"audio must be a torch.Tensor or numpy array, got {type(wav).__name__}.")
    if not wav.is_floating_point():
        raise AudioInputError(f"audio tensor must be floating point in [-1, 1], got {wav.dtype}. Convert it first.")
    return wav.to(torch.float32)


def to_mono(wav: ArrayLike) -> torch.Tensor:
    """``[samples]`` or ``[channels, samples]`` -> mono ``[samples]`` float32 (channel mean, as official)."""
    wav = _as_float_tensor(wav)
    if wav.dim() == 1:
        return wav
    if wav.dim() != 2:
        raise AudioInputError(
            f"audio must have shape [samples] or [channels, samples], got {tuple(wav.shape)}. "
            "Drop the batch dimension (one clip at a time)."
        )
    if wav.shape[0] > wav.shape[1]:
        raise AudioInputError(
            f"audio shape {tuple(wav.shape)} looks like [samples, channels]; pass [channels, samples] (transpose it)."
        )
    return wav.mean(dim=0)


def _sample_rate(sample_rate: object) -> int:
    """A whole number of Hz (int, or a float such as 44100.0) -> int; anything else is an input error."""
    whole = isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool)
    if not whole or not float(sample_rate).is_integer() or sample_rate <= 0:
        raise AudioInputError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}.")
    return int(sample_rate)


def validate_audio(wav: ArrayLike, sample_rate: int, *, user_input: bool = True) -> torch.Tensor:
    """Check an input clip and return it as mono float32 ``[samples]``; raise ``AudioInputError`` if unusable.

    Rejects: sample rates outside [8 kHz, 192 kHz], empty clips, NaN/inf samples, clips shorter than
    0.5 s or longer than 30 s, and clips whose peak is below one 16-bit step (all silent).
    ``user_input=False`` (the pack's own output fed back: an edit pass, a cloned chunk) skips the two
    duration limits, which only describe what users should give: the official loop edits such audio
    whatever its length (vq06 splits it into 30 s pieces); only audio shorter than one 120 ms token
    group (less than the model ever writes) is refused.
    """
    sample_rate = _sample_rate(sample_rate)
    if sample_rate < MIN_INPUT_SAMPLE_RATE or sample_rate > MAX_INPUT_SAMPLE_RATE:
        raise AudioInputError(
            f"sample rate {sample_rate} Hz is outside the supported range "
            f"{MIN_INPUT_SAMPLE_RATE}-{MAX_INPUT_SAMPLE_RATE} Hz; resample it (16, 24, 44.1 or 48 kHz are common)."
        )
    raw = _as_float_tensor(wav)
    if raw.numel() == 0:
        raise AudioInputError(
            "audio is empty (no samples). "
            f"Provide speech between {MIN_INPUT_SECONDS} and {MAX_INPUT_SECONDS:.0f} seconds."
        )
    mono = to_mono(raw)
    if not bool(torch.isfinite(raw).all()):
        raise AudioInputError("audio contains NaN or infinite samples. Fix or re-export the clip.")
    seconds = mono.shape[-1] / sample_rate
    if user_input and seconds < MIN_INPUT_SECONDS:
        raise AudioInputError(
            f"audio is {seconds:.3f} s long; at least {MIN_INPUT_SECONDS} s of speech is needed. Use a longer clip."
        )
    if not user_input and seconds < GROUP_SECONDS:
        raise AudioInputError(
            f"audio is {seconds:.3f} s long, shorter than one {GROUP_SECONDS * 1000:.0f} ms token group: too short "
            "to tokenise."
        )
    if user_input and seconds > MAX_INPUT_SECONDS:
        raise AudioInputError(
            f"audio is {seconds:.2f} s long; at most {MAX_INPUT_SECONDS:.0f} s is supported. "
            "Cut it into pieces of 30 s or less (edit each piece separately)."
        )
    if float(mono.abs().max()) < SILENT_PEAK:
        raise AudioInputError("audio is silent (peak below one 16-bit step). Provide a clip with audible speech.")
    return mono


# --- official sample-wise steps ----------------------------------------------------------------


def cap_peak(wav: torch.Tensor, peak: float = EDIT_INPUT_PEAK) -> torch.Tensor:
    """Official ``tts.py`` cap: ``wav / max|wav| * peak`` when ``max|wav| > peak``, else unchanged (no host sync)."""
    top = wav.abs().amax(dim=-1, keepdim=True)
    return torch.where(top > peak, wav / top * peak, wav)


def energy_norm(wav: torch.Tensor) -> torch.Tensor:
    """Official ``energy_norm_fn``: scale so the peak is 0.999, dividing by at least 0.01."""
    top = wav.abs().amax(dim=-1, keepdim=True)
    return wav / torch.clamp(top, min=PEAK_NORM_FLOOR) * PEAK_NORM_TARGET


@functools.lru_cache(maxsize=32)
def _resample_transform(orig_freq: int, new_freq: int, device: str) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_freq=orig_freq, new_freq=new_freq).to(device)


def resample(wav: torch.Tensor, orig_freq: int, new_freq: int, *, float64_kernel: bool = False) -> torch.Tensor:
    """Band-limited resampling over the last dim, exactly as torchaudio does it.

    ``float64_kernel=True`` reproduces ``torchaudio.transforms.Resample`` (the official tokenizer path);
    ``False`` reproduces ``torchaudio.functional.resample`` (the speaker embedding and prompt mel paths).
    """
    if orig_freq == new_freq:
        return wav
    if float64_kernel:
        return _resample_transform(int(orig_freq), int(new_freq), str(wav.device))(wav)
    return torchaudio.functional.resample(wav, int(orig_freq), int(new_freq))


@dataclass(frozen=True)
class TrimResult:
    """Where ``trim_silence`` cut: ``speech_start``/``speech_end`` are librosa's trim indices (samples)."""

    speech_start: int
    speech_end: int
    output_len: int


def librosa_trim_index(
    wav: np.ndarray,
    top_db: float = TRIM_TOP_DB,
    frame_length: int = TRIM_FRAME_LENGTH,
    hop_length: int = TRIM_HOP_LENGTH,
) -> tuple[int, int]:
    """``librosa.effects.trim(wav, top_db, frame_length, hop_length)[1]`` without librosa.

    Same numpy operations in the same order on the same memory layout (centred RMS frames with zero
    padding, dB relative to the loudest frame), so float32 rounding and hence the indices agree.
    """
    y = np.asarray(wav, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"trim works on mono audio [samples], got shape {y.shape}")
    pad = frame_length // 2
    padded = np.pad(y, (pad, pad), mode="constant")
    n_frames = 1 + (padded.shape[-1] - frame_length) // hop_length
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(frame_length, n_frames), strides=(padded.itemsize, hop_length * padded.itemsize), writeable=False
    )
    power = np.mean(np.square(frames, dtype=np.float32), axis=-2, keepdims=True)
    magnitude = np.abs(np.sqrt(power)[0])
    ref_value = np.max(magnitude)
    amin = TRIM_AMIN**2
    db = 10.0 * np.log10(np.maximum(amin, np.square(magnitude)))
    db -= 10.0 * np.log10(np.maximum(amin, ref_value**2))
    nonzero = np.flatnonzero(db > -top_db)
    if nonzero.size == 0:
        return 0, 0
    start = int(nonzero[0] * hop_length)
    end = min(y.shape[-1], int((nonzero[-1] + 1) * hop_length))
    return start, end


def trim_plan(wav16k: torch.Tensor, sample_rate: int = TOKENIZER_SAMPLE_RATE) -> TrimResult:
    """Official ``trim_silence`` bookkeeping for a mono clip (one host copy for the RMS frames)."""
    start, end = librosa_trim_index(wav16k.detach().to("cpu", torch.float32).numpy())
    num_frames = int(math.ceil((end - start) / TRIM_ROUND_SAMPLES))
    out_len = int(num_frames * TRIM_ROUND_SAMPLES + (TRIM_KEEP_LEFT_SECONDS + TRIM_KEEP_RIGHT_SECONDS) * sample_rate)
    return TrimResult(speech_start=start, speech_end=end, output_len=out_len)


def trim_silence(wav16k: torch.Tensor, sample_rate: int = TOKENIZER_SAMPLE_RATE) -> tuple[torch.Tensor, TrimResult]:
    """Official ``trim_silence``: keep 50 ms before and 220 ms after the speech, zero-padding where short.

    In: mono ``[samples]`` at ``sample_rate``. Out: ``[plan.output_len]`` on the same device, and the plan.
    """
    plan = trim_plan(wav16k, sample_rate)
    start_idx = plan.speech_start - int(TRIM_KEEP_LEFT_SECONDS * sample_rate)
    if start_idx > 0:
        out = wav16k[start_idx:]
    else:
        out = torch.nn.functional.pad(wav16k, (-start_idx, 0))
    if plan.output_len < out.shape[-1]:
        out = out[: plan.output_len]
    else:
        out = torch.nn.functional.pad(out, (0, plan.output_len - out.shape[-1]))
    return out, plan


def preprocess_for_tokenizer(wav: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, TrimResult]:
    """Official ``preprocess_wav``: mono ``[samples]`` at any rate -> trimmed 16 kHz ``[samples]`` for vq02/vq06."""
    wav16k = resample(wav, sample_rate, TOKENIZER_SAMPLE_RATE, float64_kernel=True)
    return trim_silence(energy_norm(wav16k))


# --- the whole preparation of one clip --------------------------------------------------------


@dataclass(frozen=True)
class PreparedAudio:
    """One clip ready for the front end. All tensors are mono float32 on the requested device.

    * ``wav``: the clip at ``sample_rate`` after the 0.6 peak cap (the official ``prompt_wav``).
    * ``wav16k``: ``wav`` resampled to 16 kHz (CAM++ speaker embedding input; untrimmed).
    * ``wav24k``: ``wav`` resampled to 24 kHz (decoder prompt mel input; untrimmed).
    * ``tokenizer_wav``: 16 kHz, peak-normalised and trimmed (vq02 and vq06 input).
    * ``trim``: where the trim cut (librosa indices into the 16 kHz wav, output length).
    """

    wav: torch.Tensor
    sample_rate: int
    wav16k: torch.Tensor
    wav24k: torch.Tensor
    tokenizer_wav: torch.Tensor
    trim: TrimResult


def prepare_audio(
    wav: ArrayLike, sample_rate: int, *, peak_cap: bool = True, device: torch.device | str | None = None,
    user_input: bool = True,
) -> PreparedAudio:
    """Validate one clip (``[samples]`` or ``[channels, samples]``, any supported rate) and prepare every view.

    ``peak_cap=False`` skips the official 0.6 cap (it only exists to avoid clipping over edit passes).
    ``user_input=False``: the clip is the pack's own output (no duration limits, see ``validate_audio``).
    """
    mono = validate_audio(wav, sample_rate, user_input=user_input)
    sample_rate = _sample_rate(sample_rate)
    if device is not None:
        mono = mono.to(device)
    capped = cap_peak(mono) if peak_cap else mono
    tokenizer_wav, trim = preprocess_for_tokenizer(capped, sample_rate)
    return PreparedAudio(
        wav=capped,
        sample_rate=sample_rate,
        wav16k=resample(capped, sample_rate, TOKENIZER_SAMPLE_RATE),
        wav24k=resample(capped, sample_rate, OUTPUT_SAMPLE_RATE),
        tokenizer_wav=tokenizer_wav,
        trim=trim,
    )
