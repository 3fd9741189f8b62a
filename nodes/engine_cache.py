"""The engine handle that flows between nodes, and the process-wide cache of loaded engines.

A handle is small and immutable: the load config (the cache key) plus the generation defaults of the
Engine node that made it. Every node whose handle carries the same ``EngineConfig`` runs on the same
``StepAudioEditX`` instance, which loads its weights once, on first use. The cache keeps at most
``MAX_CACHED_ENGINES`` engines; the least recently used one beyond that is unloaded, so changing e.g.
the dtype a few times does not pile up copies of the 8 GB model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..engines.step_audio_editx import (
    EngineConfig,
    GenerationSettings,
    StepAudioEditX,
)
from .widgets import SEED_FROM_ENGINE, SEED_MAX

logger = logging.getLogger(__name__)

MAX_CACHED_ENGINES = 2


@dataclass(frozen=True)
class EngineHandle:
    """What the Engine node outputs: how to load the model, and the defaults for generating with it."""

    config: EngineConfig
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    seed: int = 0

    def generation_settings(self, dynamic_tokens: Optional[bool] = None) -> GenerationSettings:
        """The handle's settings, with a node's own dynamic_token toggle applied when it has one."""
        if dynamic_tokens is None:
            return self.settings
        return dataclasses.replace(self.settings, dynamic_tokens=bool(dynamic_tokens))

    def request_seed(self, node_seed: int, row: int = 0) -> int:
        """The seed of batch row ``row``: the node's seed (or the engine's for -1) plus the row index."""
        base = self.seed if node_seed == SEED_FROM_ENGINE else node_seed
        return (int(base) + row) % (SEED_MAX + 1)

    def seed_line(self, node_seed: int, rows: int = 1) -> str:
        """Which seed decided the output, for the info text (the Engine's, or the node's own)."""
        whose = "the Engine's (this node's seed is -1)" if node_seed == SEED_FROM_ENGINE else "this node's own"
        per_clip = "; clip i uses seed + i - 1" if rows > 1 else ""
        return f"seed: {self.request_seed(node_seed)}, {whose}{per_clip}"


class EngineCache:
    """Engines by load config, least recently used first; evicted engines are unloaded."""

    def __init__(self, capacity: int = MAX_CACHED_ENGINES,
                 factory: Callable[[EngineConfig], StepAudioEditX] = StepAudioEditX):
        self.capacity = capacity
        self.factory = factory
        self._engines: OrderedDict[EngineConfig, StepAudioEditX] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: EngineConfig,
            on_evict: Optional[Callable[[StepAudioEditX], None]] = None) -> StepAudioEditX:
        """The shared engine for ``config`` (created unloaded on first request)."""
        with self._lock:
            engine = self._engines.get(config)
            if engine is None:
                engine = self.factory(config)
                self._engines[config] = engine
            self._engines.move_to_end(config)
            evicted = []
            while len(self._engines) > self.capacity:
                evicted.append(self._engines.popitem(last=False))
        for old_config, old in evicted:
            logger.info("Step-Audio-EditX: unloading the least recently used engine (%s)", old_config)
            if on_evict is not None:
                on_evict(old)
            if old.loaded:
                old.unload()
        return engine

    def engines(self) -> list[tuple[EngineConfig, StepAudioEditX]]:
        with self._lock:
            return list(self._engines.items())

    def clear(self) -> None:
        """Unload and forget every engine (tests; a host's shutdown)."""
        with self._lock:
            items = list(self._engines.values())
            self._engines.clear()
        for engine in items:
            if engine.loaded:
                engine.unload()


ENGINE_CACHE = EngineCache()
