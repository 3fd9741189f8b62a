"""The four matmuls of a decode layer: which kernel runs each, and running them around the residual stream.

Per layer: ``qkv = W_qkv · norm(x)``, ``x += W_o · attn``, ``gu = W_gu · norm(x)``, ``x += W_down · swiglu(gu)``.
Each role can run as cuBLAS (``F.linear``, with the norm / SwiGLU as a separate fused kernel and the
residual add folded into the next norm), as the tensor-core ``skinny_linear`` or, for one row, the
CUDA-core ``gemv`` (either with the norm / SwiGLU inside the kernel or before it, the residual added in
place). Which is fastest depends on the GPU, the matrix and the batch bucket, so ``select_linears`` times
every candidate the way it will run (captured in a CUDA graph, cycling through all layers so nothing is
served from L2) and keeps the fastest per role; results are cached per process and stored on disk
(``matmul_choice_store``), so later processes on the same machine run the same kernels (same tokens per seed).

Quantized weights (``quant.QuantMatrix``, int4 / int8) run the same roles through the dequantizing
kernels of ``quant.interleaved`` (the session lays the words out for them once; ``quant.kernels`` reads
the stored layout) as ``dot`` / ``gemv`` choices with their own configuration lists, plus ``splitk``
(``quant.splitk``) at 2-16 rows, the group-major ``group_gemv`` (``quant.group_gemv``) at one row and the
operand-layout ``operand_dot`` (``quant.operand_dot``) at 1-16 rows on interleaved words; the ``cublas``
choice then means dequantize-then-``F.linear``, the exact reference used off CUDA and beyond 16 rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import decode_ops as ref_ops
from . import matmul_choice_store, persistent_layer, triton_decode
from .quant import group_gemv as quant_group_gemv
from .quant import interleaved as quant_interleaved
from .quant import kernels as quant_kernels
from .quant import operand_dot as quant_operand_dot
from .quant import splitk as quant_splitk
from .quant.linear import QuantMatrix

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("qkv", "o", "gate_up", "down")
PROLOGUE: dict[str, str | None] = {"qkv": "norm", "o": None, "gate_up": "norm", "down": "swiglu"}
# (BLOCK_N, BLOCK_K, num_warps, num_stages) candidates
DOT_CONFIGS: tuple[tuple[int, int, int, int], ...] = ((32, 256, 4, 4), (64, 128, 4, 4), (64, 256, 8, 3),
                                                      (16, 512, 4, 3))
GEMV_CONFIGS: tuple[tuple[int, int, int, int], ...] = ((8, 512, 4, 1), (4, 512, 2, 1), (16, 512, 8, 1),
                                                       (8, 1024, 8, 1), (4, 1024, 4, 2), (2, 1024, 2, 1),
                                                       (4, 256, 2, 2))
# Quantized weights (BLOCK_K is halved where it does not divide K: small test models).
QUANT_DOT_CONFIGS: tuple[tuple[int, int, int, int], ...] = ((32, 256, 4, 4), (64, 128, 4, 4), (64, 256, 8, 3),
                                                            (16, 512, 4, 3))
QUANT_GEMV_CONFIGS: tuple[tuple[int, int, int, int], ...] = ((8, 512, 4, 1), (16, 256, 4, 2), (4, 1024, 4, 1),
                                                             (16, 512, 8, 1), (32, 256, 8, 1))
TIMING_REPLAYS = 4
# Quantized kernel families probed once per GPU before they are timed (``supports(scheme)``, ``kernel_problem``)
PROBED_FAMILIES = {"group_gemv": quant_group_gemv, "operand_dot": quant_operand_dot}
_CACHE: dict[tuple, dict[str, "LinearChoice"]] = {}


@dataclass(frozen=True)
class LinearChoice:
    """How one role runs: ``kernel`` cublas / dot / gemv; ``fused``: the norm or SwiGLU inside the kernel."""

    kernel: str = "cublas"
    config: tuple[int, ...] | None = None  # kernel-specific numbers (see its CONFIGS)
    fused: bool = False

    def __str__(self) -> str:
        if self.kernel in DENSE:
            return "cuBLAS" if self.kernel == "cublas" else "tinygemm"
        return f"{self.kernel}{list(self.config)}{'+fused' if self.fused else ''}"


CUBLAS = LinearChoice()
TINYGEMM = LinearChoice("tinygemm")  # PyTorch's int4 matmul on a tinygemm-laid matrix (``quant.tinygemm``)
DENSE = ("cublas", "tinygemm")  # choices that take the normed / SwiGLU input and leave the residual pending


def _kernel(choice: LinearChoice, x: torch.Tensor, weight: torch.Tensor | QuantMatrix, pdl: bool = False,
            **kwargs) -> torch.Tensor:
    """Run a Triton choice; ``pdl``: as a programmatic dependent launch (the dense kernels only)."""
    if isinstance(weight, QuantMatrix):
        if choice.kernel == "splitk":
            return quant_splitk.splitk_dot(x, weight.packed, weight.scale, weight.scheme, choice.config, **kwargs)
        if choice.kernel == "group_gemv":
            return quant_group_gemv.gemv(x, weight.packed, weight.scale, weight.scheme, choice.config, **kwargs)
        if choice.kernel == "operand_dot":
            return quant_operand_dot.operand_dot(x, weight.packed, weight.scale, weight.scheme, choice.config,
                                                 **kwargs)
        if weight.interleaved:
            fn = quant_interleaved.gemv if choice.kernel == "gemv" else quant_interleaved.dot
        else:
            fn = quant_kernels.qgemv if choice.kernel == "gemv" else quant_kernels.qdot
        return fn(x, weight.packed, weight.scale, weight.scheme, choice.config, **kwargs)
    fn = triton_decode.gemv if choice.kernel == "gemv" else triton_decode.skinny_linear
    return fn(x, weight, choice.config, pdl=pdl, **kwargs)


def _dense(x: torch.Tensor, weight: torch.Tensor | QuantMatrix) -> torch.Tensor:
    """The ``cublas`` choice: ``F.linear`` (after dequantizing a quantized weight)."""
    return weight.linear(x) if isinstance(weight, QuantMatrix) else F.linear(x, weight)


class ResidualStream:
    """One decode step's residual ``x`` [B, C] and a pending delta not yet added (cuBLAS outputs are added
    by the next norm kernel instead of a separate launch). ``pdl``: the Triton kernels are launched as
    programmatic dependents (``triton_pdl``)."""

    def __init__(self, resid: torch.Tensor, eps: float, use_triton: bool, pdl: bool = False) -> None:
        self.resid = resid
        self.pending: torch.Tensor | None = None
        self.eps = eps
        self.triton = use_triton
        self.pdl = pdl and use_triton

    def _flush(self) -> None:
        if self.pending is not None:
            self.resid.add_(self.pending)
            self.pending = None

    def norm(self, weight: torch.Tensor) -> torch.Tensor:
        """``resid += pending``; RMSNorm(resid) * weight."""
        pending, self.pending = self.pending, None
        if self.triton:
            return triton_decode.add_rms_norm(self.resid, pending, weight, self.eps, pdl=self.pdl)
        if pending is not None:
            return ref_ops.add_rms_norm(self.resid, pending, weight, self.eps)
        return ref_ops.rms_norm(self.resid, weight, self.eps)

    def normed_linear(self, norm: torch.Tensor, weight: torch.Tensor, choice: LinearChoice) -> torch.Tensor:
        """``weight · RMSNorm(resid)`` (qkv, gate_up)."""
        if choice.kernel not in DENSE and choice.fused:
            self._flush()
            return _kernel(choice, self.resid, weight, pdl=self.pdl, norm_weight=norm, eps=self.eps)
        h = self.norm(norm)
        return _dense(h, weight) if choice.kernel in DENSE else _kernel(choice, h, weight, pdl=self.pdl)

    def residual_linear(self, x: torch.Tensor, weight: torch.Tensor, choice: LinearChoice, swiglu: bool) -> None:
        """``resid += weight · f(x)``, f = SwiGLU product (down) or identity (o)."""
        fused_swiglu = swiglu and choice.kernel not in DENSE and choice.fused
        if swiglu and not fused_swiglu:
            x = triton_decode.silu_mul(x, pdl=self.pdl) if self.triton else ref_ops.silu_mul(x)
        if choice.kernel in DENSE:
            self._flush()
            self.pending = _dense(x, weight)
            return
        self._flush()
        _kernel(choice, x, weight, pdl=self.pdl, swiglu=fused_swiglu, residual=self.resid)


def candidates(role: str, rows: int, mode: str, quantized: bool = False,
               interleaved: bool = False) -> list[LinearChoice]:
    """The choices worth timing for ``role`` at ``rows`` rows (``mode``: auto / cublas / triton / persistent).
    Quantized weights never time ``cublas`` (a dequantization per step) unless it is all there is.
    "persistent": the matmuls the persistent layer kernel can run as its phases (``persistent_layer``): the
    one-row GEMVs, or the tensor-core ones for 2-16 rows, with its warps and the norm / SwiGLU inside."""
    if mode == "persistent":
        kernel, configs = ("gemv", GEMV_CONFIGS) if rows == 1 else ("dot", DOT_CONFIGS)
        return [LinearChoice(kernel, c, PROLOGUE[role] is not None) for c in configs
                if persistent_layer.runs_config(c, rows)]
    if mode == "cublas" or rows > triton_decode.MIN_DOT_ROWS:
        return [CUBLAS]
    fusions = (True, False) if PROLOGUE[role] else (False,)
    if quantized:
        dots, gemvs = ((quant_interleaved.DOT_CONFIGS, quant_interleaved.GEMV_CONFIGS) if interleaved
                       else (QUANT_DOT_CONFIGS, QUANT_GEMV_CONFIGS))
        if interleaved and rows == 1:
            dots = dots[:1]  # the GEMV wins one row: fewer compiles at session start
        found = [LinearChoice("dot", c, f) for c in dots for f in fusions]
        if interleaved and rows > 1:  # one row: the GEMV and tinygemm won every role
            found += [LinearChoice("splitk", c) for c in quant_splitk.CONFIGS]
        if rows == 1:
            found += [LinearChoice("gemv", c, f) for c in gemvs for f in fusions]
        if interleaved and rows == 1:
            found += [LinearChoice("group_gemv", c, f) for c in quant_group_gemv.CONFIGS for f in fusions]
        if interleaved:
            found += [LinearChoice("operand_dot", c, f) for c in quant_operand_dot.CONFIGS for f in fusions]
        return found
    found = [CUBLAS] if mode == "auto" else []
    found += [LinearChoice("dot", c, f) for c in DOT_CONFIGS for f in fusions]
    if rows == 1:
        found += [LinearChoice("gemv", c, f) for c in GEMV_CONFIGS for f in fusions]
    return found


def _graph_seconds(step: Callable[[int], None], calls: int) -> float:
    """Seconds per call of ``step(i)`` for i in range(calls), captured as one CUDA graph and replayed."""
    step(0)  # compiles the kernels outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for i in range(calls):
            step(i)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(TIMING_REPLAYS):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / (TIMING_REPLAYS * calls)


def role_candidates(mats, role: str, rows: int, mode: str) -> list[LinearChoice]:
    """The candidates of ``role`` for these matrices as the session laid them out (interleaved words, or
    tinygemm's layout, which runs nothing else)."""
    quantized = isinstance(mats[0], QuantMatrix)
    if quantized and mats[0].scales_zeros is not None:
        return [TINYGEMM]
    found = candidates(role, rows, mode, quantized, quantized and mats[0].interleaved)
    device = str(mats[0].packed.device) if quantized else ""
    for kernel, family in PROBED_FAMILIES.items():  # only where the scheme is theirs and their GPU probe passed
        if any(c.kernel == kernel for c in found) and (
                not family.supports(mats[0].scheme) or family.kernel_problem(device) is not None):
            found = [c for c in found if c.kernel != kernel]
    fits = {"splitk": quant_splitk.fits, "operand_dot": quant_operand_dot.fits}
    words = mats[0].packed.shape[1] if quantized else 0
    return [c for c in found if c.kernel not in fits or fits[c.kernel](words, mats[0].scheme, c.config)]


def time_candidates(weights, rows: int, mode: str, pdl: bool = False) -> dict[str, dict[LinearChoice, float]]:
    """Seconds per call of every candidate of every role at ``rows`` rows, each run the way the decode step
    runs it (graph-replayed, launched as the step launches them (``pdl``), cycling through all layers so
    nothing is served from L2)."""
    device = weights.embed.device
    dtype = weights.embed.dtype
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

    resid = rand(rows, weights.embed.shape[1])
    matrices = {"qkv": weights.qkv, "o": weights.o, "gate_up": weights.gate_up, "down": weights.down}
    norms = weights.input_norms
    todo = {role: role_candidates(matrices[role], role, rows, mode) for role in ROLES}
    total = sum(len(c) for c in todo.values())
    logger.info("Timing %d decode matmul kernels at batch %d on this GPU (compiled on first use; the choice is "
                "stored per machine)", total, rows)
    found: dict[str, dict[LinearChoice, float]] = {}
    with tqdm(total=total, desc=f"decode kernels, batch {rows}", unit="kernel", leave=False) as bar:
        for role in ROLES:
            mats = matrices[role]
            inner = mats[0].shape[1]
            x = rand(rows, 2 * inner if role == "down" else inner)
            timings: dict[LinearChoice, float] = {}
            for choice in todo[role]:
                def step(i: int, choice: LinearChoice = choice) -> None:
                    stream = ResidualStream(resid, weights.eps, use_triton=True, pdl=pdl)
                    if PROLOGUE[role] == "norm":
                        stream.normed_linear(norms[i % len(norms)], mats[i % len(mats)], choice)
                    else:
                        stream.residual_linear(x, mats[i % len(mats)], choice, swiglu=role == "down")
                        stream._flush()

                try:
                    timings[choice] = _graph_seconds(step, len(mats))
                except Exception as exc:  # a configuration this GPU / compiler rejects: skip it
                    logger.debug("decode matmul %s %s failed: %s", role, choice, exc)
                bar.update()
            if not timings:
                raise RuntimeError(f"no decode matmul kernel ran for {role} at batch {rows}")
            found[role] = timings
    return found


def select_linears(weights, rows: int, mode: str, pdl: bool = False) -> dict[str, LinearChoice]:
    """Time every candidate of every role at ``rows`` rows on this GPU, launched the way the step will
    launch them (``pdl``); the fastest per role (cached per process and stored per machine)."""
    matrices = {"qkv": weights.qkv, "o": weights.o, "gate_up": weights.gate_up, "down": weights.down}
    key = (torch.cuda.get_device_name(weights.embed.device), weights.embed.dtype, rows, mode, pdl,
           weights.embed.shape[1],
           tuple((tuple(w[0].shape), getattr(w[0], "scheme", None), getattr(w[0], "interleaved", None),
                  getattr(w[0], "scales_zeros", None) is not None) for w in matrices.values()))
    if key in _CACHE:
        return _CACHE[key]
    valid = {role: role_candidates(matrices[role], role, rows, mode) for role in ROLES}
    # the candidates are part of the key: a pack that adds a kernel times again instead of keeping the old pick
    stored_key = matmul_choice_store.store_key(
        (*key, torch.__version__, torch.version.cuda, getattr(triton_decode.triton, "__version__", None),
         *(",".join(map(str, valid[role])) for role in ROLES)))
    stored = matmul_choice_store.load(stored_key, valid, _choice_from_json)
    if stored is not None:
        logger.info("Step1 decode matmuls at batch %d%s (stored for this GPU): %s", rows, " (PDL)" if pdl else "",
                    "; ".join(f"{role} {stored[role]}" for role in ROLES))
        _CACHE[key] = stored
        return stored
    chosen: dict[str, LinearChoice] = {}
    report = []
    for role, timings in time_candidates(weights, rows, mode, pdl).items():
        best = min(timings, key=timings.get)
        chosen[role] = best
        base = timings.get(CUBLAS)
        report.append(f"{role} {best} {timings[best] * 1e6:.1f}us"
                      + (f" (cuBLAS {base * 1e6:.1f}us)" if base is not None and best != CUBLAS else ""))
    logger.info("Step1 decode matmuls at batch %d%s: %s", rows, " (PDL)" if pdl else "", "; ".join(report))
    _CACHE[key] = chosen
    matmul_choice_store.save(stored_key, chosen, _choice_to_json)
    return chosen


def _choice_to_json(choice: LinearChoice) -> list:
    return [choice.kernel, list(choice.config) if choice.config is not None else None, choice.fused]


def _choice_from_json(entry: list) -> LinearChoice:
    kernel, config, fused = entry
    return LinearChoice(str(kernel), tuple(int(v) for v in config) if config is not None else None, bool(fused))
