"""What every benchmark file shares: the device, the rounds, the inputs, the timed body, ``extra_info``.

One call is one forward and one backward from fresh (``grad = None``) student logits, with a CUDA
synchronisation inside the timed call. The first call (compilation, autotuning) runs outside the timed
rounds; then one step is measured for peak memory (``bench/memory.py``), then ``benchmark.pedantic``
times the rounds. A round repeats the call until it lasts at least ``MIN_ROUND_S`` (``calls_per_round``
in ``extra_info``; pytest-benchmark reports the time of one call), so a case far shorter than the
timer's and the scheduler's noise is still timed honestly; the machine's load average is recorded
beside it. Family files keep only their providers,
shapes and the bytes their loss must move.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo
from pytest_benchmark.fixture import BenchmarkFixture

from bench.memory import MemoryUse, measure
from bench.shapes import Shape, bytes_moved, dtype_name, gbps, logit_bytes
from fastkd.backends import triton_available

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.bfloat16,) if DEVICE == "cuda" else (torch.float32,)
ROUNDS, WARMUP_ROUNDS = (20, 3) if DEVICE == "cuda" else (10, 2)
# A timed round lasts at least this long: far above the timer's resolution, a kernel launch, and the
# few milliseconds a busy scheduler may take a core away from one of the threads of a short CPU call.
MIN_ROUND_S = 0.005 if DEVICE == "cuda" else 0.05
MAX_CALLS_PER_ROUND = 10_000
# One compiled reference serves every case and shape: allow it one graph per case.
torch._dynamo.config.recompile_limit = 1024
torch._dynamo.config.accumulated_recompile_limit = 4096


def device_name() -> str:
    if DEVICE == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def machine_load() -> dict[str, float | int]:
    """The 1-minute load average and the cores this process may run on: on a shared machine whose load
    exceeds its cores, a CPU call's time includes waiting for a core (the report says so)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"load_average": os.getloadavg()[0], "cores": cores}


def require_triton() -> None:
    """Skip the test unless the ``fastkd-triton`` provider can run here."""
    if DEVICE != "cuda" or not triton_available():
        pytest.skip("fastkd-triton needs a CUDA device and triton")


def compiled(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``torch.compile(fullgraph=True)``: static shapes on CUDA for the fastest peer; PyTorch's default
    automatic-dynamic shapes on CPU to bound compile time."""
    return torch.compile(fn, fullgraph=True, dynamic=False if DEVICE == "cuda" else None)


def skip_unless_fits(shape: Shape, dtype: torch.dtype) -> None:
    """On CUDA, free cached memory and skip when inputs and gradient (3·N·V) do not fit."""
    if DEVICE != "cuda":
        return
    gc.collect()
    torch.cuda.empty_cache()
    if 3 * logit_bytes(shape.n, shape.v, dtype) > torch.cuda.mem_get_info()[0]:
        pytest.skip("inputs and gradient do not fit in device memory")


def make_logits(shape: Shape, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Student logits (a leaf that requires grad) and teacher logits, N(0, 2²), fixed seed."""
    generator = torch.Generator(DEVICE).manual_seed(0)
    student = 2.0 * torch.randn(shape.n, shape.v, device=DEVICE, dtype=dtype, generator=generator)
    teacher = 2.0 * torch.randn(shape.n, shape.v, device=DEVICE, dtype=dtype, generator=generator)
    return student.requires_grad_(), teacher


def forward_backward(loss_fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
    loss_fn(*inputs).backward()
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def first_call(step: Callable[[], None], provider: str) -> None:
    """Compile / autotune outside the timed rounds; skip on out-of-memory or a failed torch.compile."""
    try:
        step()
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        pytest.skip("out of device memory")
    except Exception as exc:
        if provider != "torch-compile":
            raise
        pytest.skip(f"torch.compile failed here: {type(exc).__name__}: {str(exc)[:200]}")


def median_seconds(benchmark: BenchmarkFixture) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


def calls_per_round(call: Callable[[], None], min_round_s: float = MIN_ROUND_S) -> int:
    """How many calls make a round of at least ``min_round_s``, from the fastest of three timed calls
    (at most ``MAX_CALLS_PER_ROUND``)."""
    fastest = math.inf
    for _ in range(3):
        start = time.perf_counter()
        call()
        fastest = min(fastest, time.perf_counter() - start)
    return max(1, min(MAX_CALLS_PER_ROUND, math.ceil(min_round_s / max(fastest, 1e-9))))


def time_step(
    benchmark: BenchmarkFixture, step: Callable[[], None], student: torch.Tensor, provider: str, group: str
) -> tuple[float | None, MemoryUse]:
    """First call, one measured step for peak memory, then the timed rounds of ``calls_per_round``
    calls each; the median time of one call and the memory."""
    first_call(step, provider)
    student.grad = None
    memory = measure(step, DEVICE)

    def fresh_step() -> None:
        student.grad = None
        step()

    calls = calls_per_round(fresh_step)
    benchmark.group = group
    benchmark.pedantic(fresh_step, rounds=ROUNDS, iterations=calls, warmup_rounds=WARMUP_ROUNDS)
    benchmark.extra_info.update(calls_per_round=calls, **machine_load())
    return median_seconds(benchmark), memory


def memory_info(memory: MemoryUse, gradient_bytes: int) -> dict[str, Any]:
    """Peak memory of a step, the part of it beyond ``gradient_bytes``, and how it was measured.

    ``memory`` is :func:`bench.memory.measure` of the step: only what the step allocates, so it holds
    no inputs (they exist before it) and nothing is subtracted for them. What it does hold is the
    gradients the step creates (the [N, V] student-logit gradient of a logit-level loss; d hidden and
    d weight of a fused-linear one: autograd allocates d weight in the step even when ``w.grad``
    exists and accumulates in place): ``gradient_bytes`` of them must exist in any training step, so
    ``extra_mem_bytes`` is what the loss needs beyond inputs and gradients.
    """
    return {
        "peak_mem_bytes": memory.peak,
        "extra_mem_bytes": None if memory.peak is None else memory.peak - gradient_bytes,
        "peak_mem_method": memory.method,
    }


def logits_info(
    provider: str,
    case: str,
    shape: Shape,
    dtype: torch.dtype,
    nbytes: int,
    median: float | None,
    memory: MemoryUse,
    **extra: Any,
) -> dict[str, Any]:
    """The ``extra_info`` of a logit-level loss that ``bench/report.py`` reads (``case`` is its
    ``divergence`` column; ``extra`` comes right after it)."""
    return {
        "provider": provider,
        "divergence": case,
        **extra,
        "N": shape.n,
        "V": shape.v,
        "dtype": dtype_name(dtype),
        "device": device_name(),
        "bytes_moved": nbytes,
        "gbps": gbps(nbytes, median) if median else None,
        **memory_info(memory, logit_bytes(shape.n, shape.v, dtype)),  # the student gradient [N, V]
    }


def bench_logits(
    benchmark: BenchmarkFixture,
    loss_fn: LossFn,
    provider: str,
    case: str,
    group: str,
    shape: Shape,
    dtype: torch.dtype,
    **extra: Any,
) -> None:
    """One whole case of a loss of (student, teacher) logits: the CUDA fit check, :func:`make_logits`,
    :func:`time_step` and :func:`logits_info` with 3·N·V·itemsize bytes moved."""
    skip_unless_fits(shape, dtype)
    student, teacher = make_logits(shape, dtype)
    step = lambda: forward_backward(loss_fn, student, teacher)
    median, memory = time_step(benchmark, step, student, provider, group)
    nbytes = bytes_moved(shape.n, shape.v, dtype)
    benchmark.extra_info.update(logits_info(provider, case, shape, dtype, nbytes, median, memory, **extra))
