"""Launch plan of the Hopper cluster kernel (``csrc/cuda/``): pure Python, unit-tested on every machine.

One token row lives in the shared memory of a thread-block cluster of C CTAs, C ∈ {1, 2, 4, 8} (the
portable cluster sizes). CTA r holds columns [r·S, (r+1)·S) of teacher and student, S = ⌈V/C⌉ rounded
up to a multiple of 8 (the kernel's 16-byte groups), so it needs align16(S·size) + S·size bytes of
dynamic shared memory. The plan takes the smallest C whose CTA needs at most ``target`` bytes (default
128 KiB, or ``FASTKD_CUDA_CTA_BYTES`` for benchmarks: 4 CTAs at V = 128256 in bf16, 8 at V = 256000),
else the smallest C within the per-block limit of sm_90, else none: then the row does not fit and
the Triton kernel runs instead (as it does for teacher and student of different dtypes, which the
cluster kernel is not instantiated for).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

CLUSTER_SIZES: tuple[int, ...] = (1, 2, 4, 8)
GROUP = 8  # columns a thread handles at once: 16 bytes of bf16/fp16, 32 of fp32
SMEM_PER_BLOCK = 232448  # sm_90's opt-in shared memory per block, 227 KiB
STATIC_SMEM = 2304  # bound on the kernel's static shared memory incl. 1 KiB reserved (tests check cuobjdump)


def _target_from_environment(default: int = 128 * 1024) -> int:
    text = os.environ.get("FASTKD_CUDA_CTA_BYTES", str(default))
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"FASTKD_CUDA_CTA_BYTES must be a positive number of bytes, got {text!r}")
    return int(text)


TARGET_CTA_BYTES = _target_from_environment()
THREADS = 512  # threads per CTA (kThreads in csrc/cuda/cluster_common.cuh)
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class ClusterPlan(NamedTuple):
    cluster: int  # CTAs per row
    slice: int  # columns per CTA, a multiple of GROUP
    smem_bytes: int  # dynamic shared memory per CTA


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def slice_bytes(columns: int, itemsize: int) -> int:
    """Dynamic shared memory of one CTA holding ``columns`` of student and teacher of ``itemsize``."""
    return _round_up(columns * itemsize, 16) + columns * itemsize


def plan_for(vocab: int, itemsize: int, target: int = TARGET_CTA_BYTES) -> ClusterPlan | None:
    """The plan for rows of ``vocab`` logits of ``itemsize`` bytes (both inputs), or None if none fits."""
    if vocab < 1:
        raise ValueError(f"a row needs at least one logit, got V={vocab}")
    plans = []
    for cluster in CLUSTER_SIZES:
        columns = _round_up(-(-vocab // cluster), GROUP)
        plans.append(ClusterPlan(cluster, columns, slice_bytes(columns, itemsize)))
    for limit in (min(target, SMEM_PER_BLOCK - STATIC_SMEM), SMEM_PER_BLOCK - STATIC_SMEM):
        fitting = [plan for plan in plans if plan.smem_bytes <= limit]
        if fitting:
            return fitting[0]
    return None


def cluster_plan(
    student: torch.Tensor, teacher: torch.Tensor, target: int = TARGET_CTA_BYTES
) -> ClusterPlan | None:
    """The plan for [N, V] ``student`` and ``teacher``; None when the cluster kernel cannot take them
    (a row too long for 8 CTAs, dtypes that differ or that the kernel has no instantiation for)."""
    if student.dtype != teacher.dtype or student.dtype not in KERNEL_DTYPES:
        return None
    return plan_for(student.shape[-1], student.element_size(), target)
