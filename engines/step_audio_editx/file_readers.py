"""Reading model files that may be damaged: one clear error per file, never a library traceback.

Pickled checkpoints load with ``torch.load(weights_only=True)`` only. When torch refuses a file, its
message advises re-running with ``weights_only=False``, which would execute code from the file: that
advice is never passed on; the user is told to re-download the file instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


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


def read_model_text(path: str | Path, source: str) -> str:
    """A model folder's text file (config, yaml, CMVN) as UTF-8; DamagedModelFileError naming it when it is not."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DamagedModelFileError(f"{path} is not a text file (byte data where UTF-8 text belongs). Re-download it "
                                    f"from {source}.") from None


def read_model_json(path: str | Path, source: str):
    """A model folder's JSON file, errors naming it."""
    import json

    path = Path(path)
    try:
        return json.loads(read_model_text(path, source))
    except json.JSONDecodeError as exc:
        raise DamagedModelFileError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}). Re-download it from "
                                    f"{source}.") from None


def read_model_yaml_mapping(path: str | Path, source: str) -> dict:
    """A model folder's YAML file that must hold a mapping, errors naming it."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(read_model_text(path, source))
    except yaml.YAMLError as exc:
        raise DamagedModelFileError(f"{path} is not valid YAML ({type(exc).__name__}). Re-download it from "
                                    f"{source}.") from None
    if not isinstance(data, dict):
        raise DamagedModelFileError(f"{path} does not hold settings (an empty or damaged file). Re-download it from "
                                    f"{source}.")
    return data


def load_model_array(path: str | Path, source: str) -> np.ndarray:
    """A ``.npy`` array (never pickled objects); DamagedModelFileError naming the file otherwise. numpy's advice to
    allow pickles is not passed on, for the same reason as torch's."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # EOFError, ValueError (pickled data, bad header), OSError
        reason = ("it holds pickled objects, which are refused" if "pickle" in str(exc).lower()
                  else "it is empty or damaged")
        raise DamagedModelFileError(f"{path} is not a plain array file: {reason}. Re-download it from {source}.") from None
