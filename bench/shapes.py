"""The one table of benchmark shapes, and the bytes a logit-level loss must move (for GB/s).

GPU shapes are real vocabularies (Llama 2, Llama 3, Qwen 2, Gemma) at training token counts. The CPU
table is the CPU target of the performance notes (fp32, N = 512, V = 32000) and a quarter of it: one
call moves 50-200 MB and takes milliseconds even on the C++ backend, so it times honestly on a shared
machine (smaller shapes measure the Python overhead and the scheduler, not the loss).
``FASTKD_BENCH_SHAPES`` = ``NxV[,NxV...]`` (e.g. ``512x32000``) replaces the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

GPU_VOCABS: tuple[int, ...] = (32000, 128256, 151936, 256000)
GPU_TOKENS: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
CPU_VOCABS: tuple[int, ...] = (32000,)
CPU_TOKENS: tuple[int, ...] = (128, 512)

ITEMSIZE: dict[str, int] = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Shape:
    """N tokens (rows) by a vocabulary of V logits."""

    n: int
    v: int

    def __str__(self) -> str:
        return f"N{self.n}-V{self.v}"


def shapes(device_type: str) -> list[Shape]:
    """The shape table for ``"cuda"`` (full) or any other device type (the CPU table), unless
    ``FASTKD_BENCH_SHAPES`` names the shapes."""
    chosen = os.environ.get("FASTKD_BENCH_SHAPES", "").strip()
    if chosen:
        return [parse_shape(item) for item in chosen.split(",")]
    if device_type == "cuda":
        return [Shape(n, v) for v in GPU_VOCABS for n in GPU_TOKENS]
    return [Shape(n, v) for v in CPU_VOCABS for n in CPU_TOKENS]


def parse_shape(text: str) -> Shape:
    """``"512x32000"`` -> Shape(512, 32000)."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"a benchmark shape is NxV with positive integers, e.g. 512x32000; got {text!r}")
    return Shape(int(parts[0]), int(parts[1]))


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` or ``"bfloat16"`` -> ``"bfloat16"`` (no torch import needed)."""
    return str(dtype).removeprefix("torch.")


def itemsize(dtype: Any) -> int:
    name = dtype_name(dtype)
    if name not in ITEMSIZE:
        raise ValueError(f"no item size known for dtype {name!r}; expected one of {list(ITEMSIZE)}")
    return ITEMSIZE[name]


def logit_bytes(n: int, v: int, dtype: Any) -> int:
    """Bytes of one [N, V] logit tensor."""
    return n * v * itemsize(dtype)


def bytes_moved(n: int, v: int, dtype: Any) -> int:
    """Bytes a forward+backward of a logit-level loss must move: read teacher and student, write dz."""
    return 3 * logit_bytes(n, v, dtype)


def gbps(nbytes: float, seconds: float) -> float:
    """Throughput in GB/s (10^9 bytes per second)."""
    return nbytes / seconds / 1e9
