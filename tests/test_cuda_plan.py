"""The launch plan of the Hopper cluster kernel (fastkd/ops/cuda_plan.py) for V from 1 to 262144 and
every dtype, and the choice between the cluster kernel and the Triton fallback. Pure Python: runs on
every machine."""

from __future__ import annotations

import pytest
import torch

from fastkd.ops.cuda_plan import (
    CLUSTER_SIZES,
    GROUP,
    SMEM_PER_BLOCK,
    STATIC_SMEM,
    TARGET_CTA_BYTES,
    cluster_plan,
    plan_for,
)
from fastkd.ops.divergence import divergence_fwd
from fastkd.ops.divergence_cuda import divergence_cuda, divergence_op_for

ITEMSIZES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
V_MAX = 262144


def sweep() -> list[int]:
    """Every V up to 4096, then every 61st, plus both sides of every place where the plan changes."""
    values = set(range(1, 4097)) | set(range(4097, V_MAX + 1, 61)) | {V_MAX}
    for itemsize in set(ITEMSIZES.values()):
        for cluster in CLUSTER_SIZES:
            for limit in (TARGET_CTA_BYTES, SMEM_PER_BLOCK - STATIC_SMEM):
                edge = (limit // (2 * itemsize)) // GROUP * GROUP * cluster  # the widest row that fits
                values |= {v for v in (edge - 1, edge, edge + 1) if 1 <= v <= V_MAX}
    return sorted(values)


def columns(vocab: int, cluster: int) -> int:
    """⌈V/C⌉ rounded up to whole groups, computed independently of the module."""
    share = (vocab + cluster - 1) // cluster
    return (share + GROUP - 1) // GROUP * GROUP


@pytest.mark.parametrize("dtype", list(ITEMSIZES), ids=str)
def test_plan_invariants_for_every_width(dtype):
    itemsize = ITEMSIZES[dtype]
    limit = SMEM_PER_BLOCK - STATIC_SMEM
    for vocab in sweep():
        plan = plan_for(vocab, itemsize)
        need = {c: 2 * columns(vocab, c) * itemsize for c in CLUSTER_SIZES}  # 16-byte aligned already
        if plan is None:  # only when even 8 CTAs exceed the per-block limit
            assert need[8] > limit, vocab
            continue
        c = plan.cluster
        assert plan.slice == columns(vocab, c) and plan.slice % GROUP == 0, (vocab, plan)
        assert c * plan.slice >= vocab > (c - 1) * plan.slice, (vocab, plan)  # covered, no CTA idle
        assert plan.smem_bytes == need[c] <= limit, (vocab, plan)
        bound = TARGET_CTA_BYTES if need[c] <= TARGET_CTA_BYTES else limit
        assert bound == TARGET_CTA_BYTES or need[8] > TARGET_CTA_BYTES, (vocab, plan)
        assert all(need[smaller] > bound for smaller in CLUSTER_SIZES if smaller < c), (vocab, plan)


def test_the_plans_of_the_issue():
    assert plan_for(128256, 2) == (4, 32064, 128256)  # Llama 3 in bf16: 4 CTAs of 125 KiB
    assert plan_for(256000, 2) == (8, 32000, 128000)  # Gemma in bf16: 8 CTAs
    assert plan_for(151936, 2).cluster == 8 and plan_for(32000, 2).cluster == 1
    assert plan_for(1, 4) == (1, 8, 64) and plan_for(1271, 2) == (1, 1272, 5088)
    assert plan_for(128256, 4) == (8, 16032, 128256)
    assert plan_for(V_MAX, 4) is None  # fp32 at 256 Ki columns: 256 KiB a CTA even with 8, so Triton
    assert plan_for(128256, 2, target=64 * 1024) == (8, 16032, 64128)  # the tuning knob


def test_plan_rejects_an_empty_row():
    with pytest.raises(ValueError, match="at least one logit, got V=0"):
        plan_for(0, 2)


def test_dtypes_and_the_fallback_to_triton():
    bf16 = torch.zeros(2, 128256, dtype=torch.bfloat16)
    assert cluster_plan(bf16, bf16) == plan_for(128256, 2)
    assert cluster_plan(bf16, bf16.float()) is None  # teacher of another dtype: not instantiated
    assert cluster_plan(bf16.double(), bf16.double()) is None
    wide = torch.zeros(1, V_MAX)
    assert cluster_plan(wide, wide) is None
    assert divergence_op_for(bf16, bf16) is divergence_cuda
    assert divergence_op_for(wide, wide) is divergence_fwd
    assert divergence_op_for(bf16, bf16.float()) is divergence_fwd


def test_the_target_from_the_environment(monkeypatch):
    from fastkd.ops.cuda_plan import _target_from_environment

    monkeypatch.delenv("FASTKD_CUDA_CTA_BYTES", raising=False)
    assert _target_from_environment() == 128 * 1024
    monkeypatch.setenv("FASTKD_CUDA_CTA_BYTES", "65536")
    assert _target_from_environment() == 65536
    for bad in ("64k", "0", "-5"):
        monkeypatch.setenv("FASTKD_CUDA_CTA_BYTES", bad)
        with pytest.raises(ValueError, match=f"positive number of bytes, got '{bad}'"):
            _target_from_environment()
