"""Loading the official decoder checkpoints (``flow.pt``, ``hift.pt``) into our modules.

The files are plain ``state_dict`` pickles: read with ``torch.load(weights_only=True)`` (no code runs).
HiFT convolutions are weight-normalised; both on-disk layouts are accepted and folded into plain
weights once at load (no per-call reparametrisation):

* ``<name>.parametrizations.weight.original0`` (g) / ``original1`` (v): ``torch.nn.utils.parametrizations``
* ``<name>.weight_g`` / ``<name>.weight_v``: the legacy ``torch.nn.utils.weight_norm`` layout

Folding uses ``torch._weight_norm(v, g, dim=0)``, the function the official modules call on every
forward, so the folded weight is bit-identical to the one the official code uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..constants import COSYVOICE_SUBDIR, HUB_REPO_EDITX
from ..file_readers import DamagedModelFileError, load_weights_pickle
from ..model_files import ModelFilesError
from .errors import DecoderWeightsError

logger = logging.getLogger(__name__)

_PARAM_G = ".parametrizations.weight.original0"
_PARAM_V = ".parametrizations.weight.original1"
_LEGACY_G = ".weight_g"
_LEGACY_V = ".weight_v"
WEIGHT_NORM_DIM = 0  # torch weight_norm default, used by every official HiFT layer
_MAX_LISTED = 8


class MissingDecoderFileError(DecoderWeightsError, ModelFilesError):
    """A file of the decoder folder is not on disk (a ``ValueError`` and a ``FileNotFoundError``)."""


def missing_file_message(path: Path) -> str:
    return (
        f"{path.name} was not found in {path.parent}. It is part of the {COSYVOICE_SUBDIR} folder of the "
        f"Hugging Face repo {HUB_REPO_EDITX}; download that repo (the whole folder) and point the loader at it."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint (CPU), with weight norm folded into ``<name>.weight``."""
    path = Path(path)
    if not path.is_file():
        raise MissingDecoderFileError(missing_file_message(path))
    try:
        state = load_weights_pickle(path, HUB_REPO_EDITX)
    except DamagedModelFileError as exc:
        raise DecoderWeightsError(str(exc)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DecoderWeightsError(f"{path} does not hold a state_dict of tensors; re-download it from {HUB_REPO_EDITX}.")
    return fold_weight_norm(state)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace (g, v) weight-norm pairs of either layout by the plain ``weight`` they define."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in ((_PARAM_G, _PARAM_V), (_LEGACY_G, _LEGACY_V)):
            if key.endswith(g_suffix):
                base = key[: -len(g_suffix)]
                v = state.get(base + v_suffix)
                if v is None:
                    raise DecoderWeightsError(f"checkpoint has {key} but not {base + v_suffix}; the file is damaged.")
                out[base + ".weight"] = torch._weight_norm(v.float(), value.float(), WEIGHT_NORM_DIM).to(v.dtype)
                break
            if key.endswith(v_suffix):
                if (key[: -len(v_suffix)] + g_suffix) not in state:
                    raise DecoderWeightsError(f"checkpoint has {key} but not its weight-norm gain; the file is damaged.")
                break
        else:
            out[key] = value
    return out


def load_into(module: nn.Module, state: dict[str, torch.Tensor], filename: str, assign: bool = False) -> None:
    """Load ``state`` into ``module`` strictly (``assign``: adopt the tensors, for meta-device modules);
    any missing, extra or mis-shaped tensor is an error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
                parts.append(f"{label}: {', '.join(items[:_MAX_LISTED])}{more}")
        raise DecoderWeightsError(
            f"{filename} does not match cosyvoice.yaml ({'; '.join(parts)}). The yaml and the checkpoint must come "
            f"from the same {COSYVOICE_SUBDIR} folder of {HUB_REPO_EDITX}."
        )
    module.load_state_dict(state, strict=True, assign=assign)
    logger.debug("loaded %d tensors from %s", len(state), filename)
