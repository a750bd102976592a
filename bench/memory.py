"""Peak memory of one step beyond what was allocated before it, on CUDA and on CPU.

CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the allocation events that
``torch.profiler`` records with ``profile_memory=True`` (allocations are positive, frees negative),
replayed in time order. Used by the benchmarks (``extra_info``) and by the memory tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile


@dataclass(frozen=True)
class MemoryUse:
    """Peak bytes beyond the start, the method, and (CPU only) every allocation's size in bytes."""

    peak: int | None
    method: str
    allocations: tuple[int, ...] = ()


def measure(step: Callable[[], None], device_type: str) -> MemoryUse:
    if device_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return MemoryUse(torch.cuda.max_memory_allocated() - before, "cuda.max_memory_allocated")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return MemoryUse(None, "unavailable")
    current = peak = 0
    timeline = sorted((e.start_ns(), e.nbytes()) for e in events)
    for _, nbytes in timeline:
        current += nbytes
        peak = max(peak, current)
    return MemoryUse(peak, "profiler allocation events", tuple(n for _, n in timeline if n > 0))
