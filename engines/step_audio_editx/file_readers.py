"""Reading model files that may be damaged: one clear error per file, never a library traceback.

Pickled checkpoints load with ``torch.load(weights_only=True)`` only. When torch refuses a file, its
message advises re-running with ``weights_only=False``, which would execute code from the file: that
advice is never passed on; the user is told to re-download the file instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path


class DamagedModelFileError(ValueError):
    """A model file that exists but cannot be read safely; the message names it and where to get it again."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds objects other than plain tensors; loading it would run code, which is refused"
    if isinstance(exc, EOFError):
        return "it ends early (an interrupted download?)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "weights_only" in first or "pickle" in first.lower():
        return "it holds objects other than plain tensors; loading it would run code, which is refused"
    return first


def load_weights_pickle(path: str | Path, source: str):
    """``torch.load(path, weights_only=True)`` on the CPU; DamagedModelFileError naming ``source`` to re-download."""
    import torch

    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (RuntimeError, UnpicklingError, EOFError, ...)
        raise DamagedModelFileError(f"{path} cannot be read: {_reason(exc)}. Re-download it from {source}.") from None


def open_onnx_session(path: str | Path, source: str, **session_kwargs):
    """An onnxruntime InferenceSession; DamagedModelFileError naming ``source`` when the file is not a valid model."""
    import onnxruntime as ort

    path = Path(path)
    try:
        return ort.InferenceSession(str(path), **session_kwargs)
    except Exception as exc:  # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) share no useful base
        raise DamagedModelFileError(f"{path} is not a valid ONNX model ({_reason(exc)}). Re-download it from "
                                    f"{source}.") from None
