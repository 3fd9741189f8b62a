"""Front-end encoders parked in pinned host memory between uses (``EngineConfig.offload_frontend``).

Why: the vq02 (Paraformer SAN-M) and vq06 (S3) encoders are about 1.1 GiB of fp32 weights that only the
front end (and transcription) read, once per new clip; the peak of an edit comes later (the vocoder, the
language model's decode state), when they sit idle. With int4 weights that GiB decides whether a 30 s
edit fits in 5 GB. Parked, each module's tensors live in pinned host memory; ``resident()`` gives them
device copies for the block (an asynchronous copy, ~0.1 s per GiB over PCIe 4) and drops the copies
after. The values never change, so results are bit-identical to keeping them on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..lm.quant.linear import quant_modules


def offload_wanted(choice: str, device: torch.device, lm: nn.Module | None) -> bool:
    """Whether the encoders are parked: ``on`` / ``off`` on a GPU as asked; ``auto``: on when the local
    language model holds quantized weights (the small-GPU case). No GPU, or a remote LM (``lm`` None):
    the weights stay put."""
    if device.type != "cuda":
        return False
    if choice != "auto":
        return choice == "on"
    return lm is not None and bool(quant_modules(lm))


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _point(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Re-point the module's parameters / buffers at ``tensors`` (same names), without copying."""
    for name, tensor in tensors.items():
        owner, _, leaf = name.rpartition(".")
        holder = module.get_submodule(owner) if owner else module
        if leaf in holder._parameters:
            old = holder._parameters[leaf]
            holder._parameters[leaf] = nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            holder._buffers[leaf] = tensor


class ParkedModules:
    """Modules whose weights stay in host memory except inside ``resident(device)``."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        pin = torch.cuda.is_available()
        self.host = [{k: (t.detach().to("cpu").pin_memory() if pin else t.detach().to("cpu"))
                      for k, t in _tensors(m).items()} for m in modules]
        self.park()

    def park(self) -> None:
        for module, host in zip(self.modules, self.host):
            _point(module, host)

    @contextmanager
    def resident(self, device: torch.device) -> Iterator[None]:
        """The modules on ``device`` for the block (nothing moves for a CPU device)."""
        if device.type == "cpu":
            yield
            return
        for module, host in zip(self.modules, self.host):
            _point(module, {k: t.to(device, non_blocking=True) for k, t in host.items()})
        try:
            yield
        finally:
            self.park()
