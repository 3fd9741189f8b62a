"""How ``load_step1`` reads quantized weights: a compressed-tensors checkpoint, or float weights quantized as
they are read (one matrix at a time on the target device, so the float model never exists there whole).

The checkpoint's ``config.json`` carries (as llmcompressor / compressed-tensors write it)::

    "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
      "quantization_status": "compressed", "ignore": ["lm_head"],
      "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": null,
          "weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group",
                      "group_size": 128, ...}}}, ...}

Only weight-only, symmetric, per-group integer schemes are accepted; which modules are quantized is read
from the tensors themselves (``<module>.weight_packed`` present), so ``ignore`` / ``targets`` patterns need
no regex engine here. Anything else is a ``QuantFormatError`` saying what was found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...constants import QUANTIZE_CHOICES
from .format import QuantFormatError, QuantScheme, quantize, scale_dtype
from .linear import QUANT_TARGETS, QuantLinear, replace_with_empty_quant_linears

logger = logging.getLogger(__name__)

QUANT_CONFIG_KEY = "quantization_config"
MODEL_CONFIG = "config.json"
QUANT_METHOD = "compressed-tensors"
PACKED_FORMAT = "pack-quantized"
PACKED, SCALE, SHAPE, ZERO_POINT = "weight_packed", "weight_scale", "weight_shape", "weight_zero_point"
_BITS = {"int8": 8, "int4": 4}


def scheme_for_choice(choice: str | None) -> QuantScheme | None:
    """``none`` / ``int8`` / ``int4`` -> the on-load scheme (group 128), or None."""
    choice = (choice or "none").strip().lower()
    if choice not in QUANTIZE_CHOICES:
        raise ValueError(f"Unknown quantization {choice!r}; choose one of {', '.join(QUANTIZE_CHOICES)}.")
    return QuantScheme(_BITS[choice]) if choice in _BITS else None


def parse_quantization_config(config: dict, folder: Path | str = "") -> QuantScheme:
    """The weight scheme of a compressed-tensors ``quantization_config`` (raises on anything unsupported)."""
    where = f"{folder}: " if folder else ""
    method = config.get("quant_method")
    if method != QUANT_METHOD:
        raise QuantFormatError(f"{where}quantization method {method!r} is not supported (only {QUANT_METHOD!r}, "
                               "e.g. StepFun's Step-Audio-EditX-AWQ-4bit).")
    schemes = set()
    for name, group in (config.get("config_groups") or {}).items():
        weights = group.get("weights") or {}
        fmt = group.get("format") or config.get("format")
        problems = []
        if fmt != PACKED_FORMAT:
            problems.append(f"format {fmt!r} (need {PACKED_FORMAT!r})")
        if group.get("input_activations") or group.get("output_activations"):
            problems.append("quantized activations (only weight-only schemes run here)")
        if weights.get("type", "int") != "int":
            problems.append(f"weight type {weights.get('type')!r}")
        if not weights.get("symmetric", False):
            problems.append("asymmetric weights (zero points)")
        if weights.get("strategy") != "group":
            problems.append(f"strategy {weights.get('strategy')!r} (need 'group')")
        if weights.get("actorder"):
            problems.append(f"activation ordering {weights.get('actorder')!r}")
        if problems:
            raise QuantFormatError(f"{where}quantization group {name!r} is not supported: {'; '.join(problems)}.")
        schemes.add(QuantScheme(int(weights.get("num_bits", 0)), int(weights.get("group_size") or 0)))
    if len(schemes) != 1:
        raise QuantFormatError(f"{where}expected exactly one weight scheme in {QUANT_CONFIG_KEY}, found "
                               f"{len(schemes)}.")
    return schemes.pop()


@dataclass
class QuantPlan:
    """What the loader does differently for one quantized load."""

    scheme: QuantScheme
    stored: bool  # True: the checkpoint holds packed weights; False: quantize float weights on load
    modules: set[str] = field(default_factory=set)  # module names that become QuantLinear

    def expected(self, float_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """The tensors the checkpoint must hold, from the float model's names and shapes."""
        if not self.stored:
            return float_shapes
        expected = dict(float_shapes)
        for name in self.modules:
            out_features, in_features = expected.pop(f"{name}.weight")
            self.scheme.check_shape(out_features, in_features)
            expected[f"{name}.{PACKED}"] = (out_features, self.scheme.packed_cols(in_features))
            expected[f"{name}.{SCALE}"] = (out_features, self.scheme.scale_cols(in_features))
            expected[f"{name}.{SHAPE}"] = (2,)
        return expected

    def apply(self, model, dtype: torch.dtype) -> None:
        """Swap the meta model's target projections for empty ``QuantLinear``."""
        layers = {int(n.split(".")[2]) for n in self.modules}
        replace_with_empty_quant_linears(model, self.scheme, dtype, layers, per_columns=not self.stored)
        stray = {n for n, m in model.named_modules() if isinstance(m, QuantLinear)} - self.modules
        for name in stray:  # a projection the checkpoint left in float (ignored by its recipe)
            linear = model.get_submodule(name)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child,
                    torch.nn.Linear(linear.in_features, linear.out_features, bias=False, device="meta", dtype=dtype))

    def store(self, model, key: str, tensor: torch.Tensor, dtype: torch.dtype) -> bool:
        """Place ``tensor`` if it belongs to a quantized module (True), else leave it to the loader (False)."""
        module_name, _, name = key.rpartition(".")
        if module_name not in self.modules:
            return False
        module: QuantLinear = model.get_submodule(module_name)
        if not self.stored:  # name == "weight": quantize as read, then cast the scales
            packed, scale = quantize(tensor, module.scheme)
            module.set_tensors(packed, scale.to(scale_dtype(scale.dtype, dtype)))
        elif name == PACKED:
            module.weight_packed = tensor.to(torch.int32)
        elif name == SCALE:
            module.weight_scale = tensor.to(scale_dtype(tensor.dtype, dtype))
        elif name == SHAPE:
            if tuple(int(v) for v in tensor.tolist()) != (module.out_features, module.in_features):
                raise QuantFormatError(f"{key} is {tensor.tolist()}, but the module is "
                                       f"[{module.out_features}, {module.in_features}].")
        else:
            return False
        return True


def plan_quantization(folder: Path, raw_config: dict, keys: set[str], num_layers: int,
                      quantize_choice: str | None) -> QuantPlan | None:
    """The plan for this folder and request, or None for a plain float load."""
    on_load = scheme_for_choice(quantize_choice)
    targets = {f"model.layers.{i}.{t}" for i in range(num_layers) for t in QUANT_TARGETS}
    if QUANT_CONFIG_KEY in raw_config:
        scheme = parse_quantization_config(raw_config[QUANT_CONFIG_KEY], folder)
        packed = {k.rpartition(".")[0] for k in keys if k.endswith(f".{PACKED}")}
        unknown = sorted(packed - targets)
        if unknown:
            raise QuantFormatError(f"{folder}: quantized tensors outside the layers' projections are not supported "
                                   f"({', '.join(unknown[:3])}).")
        if any(k.endswith(f".{ZERO_POINT}") for k in keys):
            raise QuantFormatError(f"{folder}: the checkpoint stores zero points (asymmetric weights): unsupported.")
        if on_load is not None and on_load != scheme:
            logger.warning("%s is already quantized (%s, group %d): ignoring the request to quantize to %s",
                           folder, scheme.name, scheme.group_size, on_load.name)
        return QuantPlan(scheme, stored=True, modules=packed)
    if any(k.endswith(f".{PACKED}") for k in keys):
        raise QuantFormatError(f"the checkpoint holds packed quantized tensors ({PACKED}) but {MODEL_CONFIG} has no "
                               f"{QUANT_CONFIG_KEY}: restore the folder's original {MODEL_CONFIG}.")
    if on_load is None:
        return None
    return QuantPlan(on_load, stored=False, modules=targets)
