"""The flow's velocity estimator as one CUDA graph per flow call: captured after the first Euler step, replayed
for the others.

Why: a DiT forward is ~650 small kernels, launched one by one from Python; on the GPU they take ~9 ms (one
30 s clip) but launching them takes 15-37 ms depending on the host CPU, ten times per call. Every step of
one call has the same shapes, the same conditions (``mu``, speaker, prompt mel, padding) and only a new
``x`` and ``t``, so one capture serves the nine steps after the first. The replay runs the very kernels
the eager step ran, so the mel is bit for bit the eager one (``tests/test_flow_graph_cuda.py``).
"""

from __future__ import annotations

import logging

import torch

from .attention import KeyPadding

logger = logging.getLogger(__name__)


class GraphedEstimator:
    """``estimator(x, mu, spks, cond, t, padding)`` for fixed ``mu / spks / cond / padding``: the first call runs
    eagerly and captures, later calls replay. Without CUDA, or once a capture failed on this install (said once
    in the log), every call runs eagerly: same numbers, only slower."""

    capture_failed = False  # per process: an install that cannot capture is not asked again

    def __init__(self, estimator: torch.nn.Module, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
                 padding: KeyPadding | None, enabled: bool = True):
        self.estimator, self.mu, self.spks, self.cond, self.padding = estimator, mu, spks, cond, padding
        self.enabled = enabled and mu.is_cuda and not GraphedEstimator.capture_failed
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x = self.t = self.out = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            self.x.copy_(x)
            self.t.copy_(t)
            self.graph.replay()
            return self.out
        out = self.estimator(x, self.mu, self.spks, self.cond, t, self.padding)  # warms every kernel up too
        if self.enabled:
            self._capture(x, t)
        return out

    def _capture(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """Capture on a side stream while the GPU still runs the eager step: without ``torch.cuda.graph``'s
        device synchronisation and cache flush, the capture's CPU time hides behind that step's kernels."""
        self.x, self.t = x.clone(), t.clone()
        graph = torch.cuda.CUDAGraph()
        main = torch.cuda.current_stream(self.mu.device)
        side = torch.cuda.Stream(self.mu.device)
        side.wait_stream(main)  # the static inputs' copies above, and everything the capture reads
        try:
            with torch.cuda.stream(side):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    self.out = self.estimator(self.x, self.mu, self.spks, self.cond, self.t, self.padding)
                finally:
                    graph.capture_end()
            main.wait_stream(side)
        except Exception as exc:
            torch.cuda.synchronize(self.mu.device)
            GraphedEstimator.capture_failed = True
            self.enabled = False
            logger.warning("The flow decoder's CUDA graph failed on %s (%s: %s); its steps run eagerly",
                           self.mu.device, type(exc).__name__, exc)
            return
        self.graph = graph
