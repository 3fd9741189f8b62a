"""Where a call's peak VRAM goes: the weights of each part, and the allocations live at the peak by site.

Uses PyTorch's allocator trace (``torch.cuda.memory._record_memory_history`` with Python stacks): the
events of the call are replayed from the memory allocated before it, the moment of the highest total is
found, and the blocks live then are summed by the first frame inside this package (file:line function).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch

from bench_common import BYTES_PER_GIB

PACKAGE_MARK = "comfyui_step_audio_editx"
TRACE_ENTRIES = 500_000
TOP_SITES = 10


def module_gib(modules: dict[str, torch.nn.Module]) -> dict[str, float]:
    """GPU bytes of each module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    found = {}
    for name, module in modules.items():
        total = 0
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_cuda and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        found[name] = total / BYTES_PER_GIB
    return found


def _site(frames: list[dict]) -> str:
    for frame in frames:
        name = frame.get("filename", "")
        if PACKAGE_MARK in name:
            short = name.split(PACKAGE_MARK + "/", 1)[-1]
            return f"{short}:{frame.get('line')} {frame.get('name')}"
    return "(outside the package)"


def live_at_peak(call: Callable[[], object], device: torch.device) -> dict:
    """Run ``call`` under the allocator trace; the peak and what was live then (GiB by allocation site)."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.memory._record_memory_history(max_entries=TRACE_ENTRIES, stacks="python")
    try:
        call()
        torch.cuda.synchronize(device)
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    events = [e for trace in snapshot.get("device_traces", []) for e in trace]

    def replay(stop: int | None) -> tuple[int, int, dict]:
        current, best, best_at, live = base, base, -1, {}
        for i, event in enumerate(events if stop is None else events[:stop + 1]):
            action = event.get("action")
            if action == "alloc":
                current += event["size"]
                live[event["addr"]] = (event["size"], event.get("frames", []))
            elif action == "free_completed":
                current -= event["size"]
                live.pop(event["addr"], None)
            if current > best:
                best, best_at = current, i
        return best, best_at, live

    peak, at, _ = replay(None)
    _, _, live = replay(at) if at >= 0 else (0, 0, {})
    sites: Counter = Counter()
    for size, frames in live.values():
        sites[_site(frames)] += size
    return {"before_call_gib": base / BYTES_PER_GIB, "trace_peak_gib": peak / BYTES_PER_GIB,
            "events": len(events), "live_at_peak_gib": {k: v / BYTES_PER_GIB for k, v in sites.most_common(TOP_SITES)}}
