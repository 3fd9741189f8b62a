"""Engine progress reports -> a node progress bar (per generated token) and a status line with rate and ETA.

Pure bookkeeping with an injectable clock, so it is testable without ComfyUI; ``comfy_bridge`` sends
the updates to the UI. The ETA runs to the token cap of each remaining model call, which is an upper
bound: a call usually ends earlier, at the model's end token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..engines.step_audio_editx import Progress

UI_UPDATE_INTERVAL_S = 0.1  # at most ~10 bar/text updates a second reach the browser
GENERATE_STAGE = "generate"
SECONDS_PER_MINUTE = 60


@dataclass(frozen=True)
class ProgressUpdate:
    """What the UI should show now: ``value`` of ``total`` tokens, or only ``text`` when ``total`` is 0."""

    value: int
    total: int
    text: str


def format_seconds(seconds: float) -> str:
    if seconds < SECONDS_PER_MINUTE:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), SECONDS_PER_MINUTE)
    return f"{minutes} min {rest:02d} s"


class TokenProgress:
    """Tracks one node execution: the bar spans every model call, one step per generated token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, min_interval: float = UI_UPDATE_INTERVAL_S):
        self.clock = clock
        self.min_interval = min_interval
        self.last: Optional[Progress] = None
        self._last_emit = float("-inf")
        self._call_key: Optional[tuple[int, str]] = None
        self._call_start = 0.0
        self._call_start_done = 0
        self._started = clock()
        self._generated: dict[int, int] = {}  # model call -> tokens generated in it

    def update(self, p: Progress) -> Optional[ProgressUpdate]:
        """Record ``p``; return an update when the UI is due one (throttled, except at stage ends)."""
        now = self.clock()
        key = (p.call, p.stage)
        changed = key != self._call_key
        if changed:
            self._call_key, self._call_start, self._call_start_done = key, now, p.done
        self.last = p
        if p.stage == GENERATE_STAGE:
            self._generated[p.call] = max(self._generated.get(p.call, 0), p.done)
        finished = p.total > 0 and p.done >= p.total
        if not (changed or finished or now - self._last_emit >= self.min_interval):
            return None
        self._last_emit = now
        if p.stage != GENERATE_STAGE:
            return ProgressUpdate(0, 0, f"{p.stage}{self._call_label(p)}")
        return ProgressUpdate((p.call - 1) * p.total + p.done, p.calls * p.total, self._generate_text(p, now))

    @staticmethod
    def _call_label(p: Progress) -> str:
        return f" (model call {p.call}/{p.calls})" if p.calls > 1 else ""

    def _generate_text(self, p: Progress, now: float) -> str:
        text = f"{p.done}/{p.total} tokens{self._call_label(p)}"
        elapsed, produced = now - self._call_start, p.done - self._call_start_done
        if produced > 0 and elapsed > 0:
            rate = produced / elapsed
            remaining = (p.total - p.done) + (p.calls - p.call) * p.total
            text += f", {rate:.1f} tokens/s, at most {format_seconds(remaining / rate)} left"
        return text

    def finished_text(self, outcome: str = "done") -> str:
        """The node's last status line: ``outcome`` with the tokens generated and the time it took."""
        calls = len(self._generated)
        text = f"{outcome}: {sum(self._generated.values())} tokens generated"
        if calls > 1:
            text += f" in {calls} model calls"
        return f"{text}, {format_seconds(self.clock() - self._started)}"
