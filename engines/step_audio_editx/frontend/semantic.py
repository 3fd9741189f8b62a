"""vq06 ("semantic") tokens: the CosyVoice S3 tokenizer v1 at 25 Hz (our torch port in ``s3_model``).

The official code runs ``speech_tokenizer_v1.onnx`` on whisper log-mels (128 bins) of each 30 s piece of
the 16 kHz clip (pieces shorter than 480 samples dropped). ``s3_model`` implements the same network in
torch and ``s3_onnx`` reads the ONNX weights into it. Reading parses a large ONNX graph, so its result is
cached as safetensors next to the ONNX (or in the user cache folder when that folder is read-only) and
later loads skip it. The cache stores the model config in its metadata, so any tokenizer size loads from
it (tests use a tiny random one); its format is the one earlier versions wrote through the ``s3tokenizer``
package, so existing caches stay valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..constants import (
    HUB_REPO_TOKENIZER,
    TOKENIZER_SAMPLE_RATE,
    VQ06_CHUNK_SECONDS,
    VQ06_FRAME_RATE,
    VQ06_MAX_CODE_DRIFT,
    VQ06_MEL_HOP,
    VQ06_MIN_CHUNK_SAMPLES,
    VQ06_MODEL_NAME,
    VQ06_ONNX_FILE,
    VQ06_V1_HEADS,
)
from ..cache_dirs import package_cache_dir
from ..file_readers import DamagedModelFileError
from .s3_model import CONV_STRIDES, S3Config, S3Tokenizer, log_mel_spectrogram, pad_mels
from .s3_onnx import onnx_state_dict

logger = logging.getLogger(__name__)

CACHE_FORMAT = "comfyui_step_audio_editx.s3tokenizer.v1"
CACHE_SUFFIX = ".s3tokenizer.safetensors"
_FINGERPRINT_BYTES = 1 << 20  # hash the first and last MiB (plus the size) of the ONNX


class S3CacheError(ValueError):
    """A cached S3 tokenizer file is not in the expected format; the message says how to recover."""


# --- cache files ----------------------------------------------------------------------------------


def onnx_fingerprint(onnx_path: str | Path) -> str:
    """Cheap identity of an ONNX file: sha256 of its size, first MiB and last MiB."""
    path = Path(onnx_path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            f.seek(max(size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
            digest.update(f.read())
    return digest.hexdigest()


def cache_path_next_to(onnx_path: str | Path) -> Path:
    """Where the converted weights go first: ``speech_tokenizer_v1.s3tokenizer.safetensors`` beside the ONNX."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + CACHE_SUFFIX)


def user_cache_dir() -> Path:
    """Fallback cache folder: ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/comfyui_step_audio_editx/s3tokenizer``."""
    return package_cache_dir() / "s3tokenizer"


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically (temp file + rename) so an interrupted write never leaves a broken cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_s3tokenizer(model: torch.nn.Module, path: str | Path, *, source_fingerprint: str = "") -> Path:
    """Save an ``S3Tokenizer`` (weights + config + name) in the cache format."""
    config = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "use_sdpa"}
    metadata = {
        "format": CACHE_FORMAT,
        "name": model.name,
        "config": json.dumps(config),
        "source_fingerprint": source_fingerprint,
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    _write_cache(path, tensors, metadata)
    return path


def read_cache_metadata(path: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError on a broken header
        raise S3CacheError(f"cannot read {path} ({exc}); delete it and it is rebuilt from the ONNX.") from exc
    if metadata.get("format") != CACHE_FORMAT:
        raise S3CacheError(
            f"{path} is not an S3 tokenizer cache of this node pack; delete it and it is rebuilt from the ONNX."
        )
    return metadata


def load_s3tokenizer(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    use_sdpa: bool | None = None,
) -> torch.nn.Module:
    """Build an ``S3Tokenizer`` from a cache file (config from its metadata), on ``device`` in eval mode."""
    metadata = read_cache_metadata(path)
    device = torch.device(device)
    fields = json.loads(metadata["config"])
    if use_sdpa is None:
        use_sdpa = device.type == "cuda"
    model = S3Tokenizer(metadata["name"], config=S3Config(**fields, use_sdpa=use_sdpa))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=dtype).eval()


def random_s3tokenizer(seed: int = 0, name: str = VQ06_MODEL_NAME, **config: int) -> torch.nn.Module:
    """An ``S3Tokenizer`` with seeded random weights for tests and benchmarks (``config``: ``S3Config`` fields)."""
    gen = torch.Generator().manual_seed(seed)
    model = S3Tokenizer(name, config=S3Config(**config))
    with torch.no_grad():
        for key, param in model.named_parameters():
            if "_ln" in key:
                param.copy_((1.0 if key.endswith("weight") else 0.0) + 0.1 * torch.randn(param.shape, generator=gen))
            elif key.endswith("bias"):
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))
        embed = model.quantizer._codebook.embed
        embed.copy_(torch.nn.functional.normalize(torch.randn(embed.shape, generator=gen), dim=-1))
    return model.eval()


def s3_config_from_state(state: dict[str, torch.Tensor], heads: int) -> dict[str, int]:
    """``S3Config`` fields of converted weights (the head count is not visible in shapes; pass it)."""
    conv1 = state["encoder.conv1.weight"]
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")}
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(state["encoder.positional_embedding"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": int(heads),
        "n_audio_layer": len(blocks),
        "n_codebook_size": int(state["quantizer._codebook.embed"].shape[0]),
    }


def _valid_cache(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        return read_cache_metadata(path).get("source_fingerprint") == fingerprint
    except (S3CacheError, OSError):
        logger.warning("ignoring unreadable S3 tokenizer cache %s", path)
        return False


def cached_weights(onnx_path: str | Path, *, cache_dir: str | Path | None = None, heads: int = VQ06_V1_HEADS) -> Path:
    """Path of converted weights for ``onnx_path``, converting the ONNX on first use.

    Looks beside the ONNX, then in ``cache_dir`` (default ``user_cache_dir()``); converts it if neither holds weights of this exact file, writing beside the ONNX when that
    folder is writable and in ``cache_dir`` otherwise.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(
            f"{onnx_path} not found. Download stepfun-ai/Step-Audio-Tokenizer (it holds {VQ06_ONNX_FILE})."
        )
    fingerprint = onnx_fingerprint(onnx_path)
    beside = cache_path_next_to(onnx_path)
    fallback = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    fallback = fallback / f"{onnx_path.stem}-{fingerprint[:16]}{CACHE_SUFFIX}"
    for candidate in (beside, fallback):
        if _valid_cache(candidate, fingerprint):
            return candidate
    logger.info("converting %s to safetensors (once; later loads use the cache)", onnx_path)
    try:
        state = onnx_state_dict(onnx_path)
        model = S3Tokenizer(VQ06_MODEL_NAME, config=S3Config(**s3_config_from_state(state, heads)))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # onnx's DecodeError, a foreign graph's missing keys ...: not the tokenizer
        raise DamagedModelFileError(f"{onnx_path} is not the S3 tokenizer ONNX model ({type(exc).__name__}). "
                                    f"Re-download it from {HUB_REPO_TOKENIZER}.") from None
    for target in (beside, fallback):
        try:
            return save_s3tokenizer(model, target, source_fingerprint=fingerprint)
        except OSError as exc:
            logger.info("cannot write S3 tokenizer cache %s (%s)", target, exc)
    raise OSError(f"could not write the converted S3 tokenizer to {beside} or {fallback}; make one of them writable.")


# --- tokenizing ---------------------------------------------------------------------------------------


def vq06_pieces(num_samples: int) -> list[tuple[int, int]]:
    """Official 30 s split of a 16 kHz clip: ``(start, end)`` sample spans, pieces < 480 samples dropped."""
    step = VQ06_CHUNK_SECONDS * TOKENIZER_SAMPLE_RATE
    spans = [(s, min(s + step, num_samples)) for s in range(0, num_samples, step)]
    return [(s, e) for s, e in spans if e - s >= VQ06_MIN_CHUNK_SAMPLES]


def vq06_code_count(num_samples: int, model_name: str = VQ06_MODEL_NAME) -> int:
    """Codes the tokenizer returns for a 16 kHz clip: per piece, mel frames N//160 through two stride convs."""
    total = 0
    for start, end in vq06_pieces(num_samples):
        frames = (end - start) // VQ06_MEL_HOP
        for stride in CONV_STRIDES[model_name]:
            frames = (frames - 1) // stride + 1
        total += frames
    return total


class Vq06Tokenizer:
    """16 kHz mono clips -> vq06 codes (25 Hz), all 30 s pieces of all clips in one batched pass."""

    def __init__(self, model: torch.nn.Module):
        if model.name not in CONV_STRIDES:
            raise ValueError(f"unsupported S3 tokenizer {model.name!r}; Step-Audio-EditX uses {VQ06_MODEL_NAME!r}.")
        self.model = model.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str) -> Vq06Tokenizer:
        self.model.to(device)
        return self

    @classmethod
    def from_safetensors(
        cls, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Vq06Tokenizer:
        return cls(load_s3tokenizer(path, device, dtype))

    @classmethod
    def from_onnx(
        cls,
        onnx_path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        cache_dir: str | Path | None = None,
        heads: int = VQ06_V1_HEADS,
    ) -> Vq06Tokenizer:
        """Load ``speech_tokenizer_v1.onnx``, converting it once and caching the weights (see ``cached_weights``)."""
        return cls.from_safetensors(cached_weights(onnx_path, cache_dir=cache_dir, heads=heads), device, dtype)

    @classmethod
    def from_folder(
        cls,
        tokenizer_dir: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        cache_dir: str | Path | None = None,
        heads: int = VQ06_V1_HEADS,
    ) -> Vq06Tokenizer:
        """Load from the ``Step-Audio-Tokenizer`` folder: its ONNX (cached conversion), or a cache file alone."""
        onnx_path = Path(tokenizer_dir) / VQ06_ONNX_FILE
        if onnx_path.is_file():
            return cls.from_onnx(onnx_path, device, dtype, cache_dir=cache_dir, heads=heads)
        beside = cache_path_next_to(onnx_path)
        if beside.is_file():
            return cls.from_safetensors(beside, device, dtype)
        raise FileNotFoundError(f"{onnx_path} not found. Download stepfun-ai/Step-Audio-Tokenizer.")

    def log_mel(self, wav16k: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel of one piece, as the official code computes it: ``[n_mels, samples // 160]``."""
        return log_mel_spectrogram(wav16k.to(self.device, torch.float32), n_mels=self.model.config.n_mels)

    @torch.inference_mode()
    def encode(self, wavs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """vq06 codes per clip: int64 ``[T]`` on CPU, T = ``vq06_code_count(len(wav))`` (about 25 per second)."""
        owners, sizes, mels = [], [], []
        for i, wav in enumerate(wavs):
            if wav.dim() != 1:
                raise ValueError(f"vq06 takes mono 16 kHz clips [samples], got shape {tuple(wav.shape)}")
            for start, end in vq06_pieces(wav.shape[0]):
                owners.append(i)
                sizes.append(end - start)
                mels.append(self.log_mel(wav[start:end]))
        out: list[list[torch.Tensor]] = [[] for _ in wavs]
        if mels:
            mel, mel_len = pad_mels(mels)
            codes, code_len = self.model.quantize(mel.to(self.device, self.dtype), mel_len.to(self.device))
            codes, code_len = codes.cpu(), code_len.cpu().tolist()
            for j, (owner, size, n) in enumerate(zip(owners, sizes, code_len, strict=True)):
                seconds = round(size / TOKENIZER_SAMPLE_RATE, 2)  # the official check
                if abs(n - seconds * VQ06_FRAME_RATE) > VQ06_MAX_CODE_DRIFT:
                    raise ValueError(f"S3 tokenizer gave {n} codes for {seconds} s; it is not a 25 Hz tokenizer.")
                out[owner].append(codes[j, :n])
        return [torch.cat(parts) if parts else torch.empty(0, dtype=torch.long) for parts in out]
