"""One CPU thread pool, sized to the cores this process may actually use.

torch's intra-op pool and the C++ kernels of ``fastkd._C`` share one OpenMP runtime (torch's
``libgomp``), so one number sizes both: the CPUs in ``os.sched_getaffinity`` capped by the cgroup CPU
quota (``/sys/fs/cgroup/cpu.max``, cgroup v2; ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, v1). The
tokenizers' own Rust pool is turned off (``TOKENIZERS_PARALLELISM=false``) and the data loaders stay in
the main process, so nothing else competes with that pool. Idle OpenMP workers sleep instead of
spinning (``OMP_WAIT_POLICY=PASSIVE``): on a loaded machine, spinning workers take the cores that the
working threads need (measured on a 2-core machine at load average 10-16: a distillation step of the
demo's tiny BERT took 2773 ms with the default active wait, 45-54 ms passive with 2 threads, 33-41 ms
with one thread). Variables the user set are left alone.
"""

from __future__ import annotations

import math
import os
import sys

CGROUP_V2 = "/sys/fs/cgroup/cpu.max"
CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_limit(v2: str = CGROUP_V2, v1: tuple[str, str] = CGROUP_V1) -> float | None:
    """The cgroup CPU quota in CPUs (quota / period), or None when there is none."""
    text = _read(v2)
    if text is not None:
        quota, _, period = text.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota, period = _read(v1[0]), _read(v1[1])
    if quota is not None and period is not None and int(quota) > 0:
        return int(quota) / int(period)
    return None


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by the cgroup quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def configure_threads() -> int:
    """Size the one thread pool at CLI start; returns the intra-op thread count in effect.

    Sets ``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch starts OpenMP,
    ``TOKENIZERS_PARALLELISM=false`` (unless set), and torch's intra-op threads when torch is already
    imported. An empty ``OMP_NUM_THREADS`` counts as unset; anything but a positive integer is a
    ValueError that names it."""
    if not os.environ.get("OMP_NUM_THREADS", "").strip():
        os.environ["OMP_NUM_THREADS"] = str(available_cpus())
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    value = os.environ["OMP_NUM_THREADS"]
    threads = int(value) if value.strip().isdigit() else 0
    if threads < 1:
        raise ValueError(f"OMP_NUM_THREADS={value!r} is not a positive integer: unset it or set e.g. 4")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def thread_report() -> dict[str, object]:
    """The thread settings of this process (for ``fastkd info``)."""
    import torch

    return {
        "cpus_available": available_cpus(),
        "cgroup_cpu_limit": cgroup_cpu_limit(),
        "torch_intra_op_threads": torch.get_num_threads(),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
    }
