"""AOT jobs of the RLKD top-k union kernel: every tile size the policy can choose and every running
top-k width KP up to the fused limit (bf16; fp32 for the widest tile)."""

from __future__ import annotations

import itertools

from fastkd.kernels.ranking import topk_union_kernel
from fastkd.ops.ranking import MAX_FUSED_K, launch_policy
from tests.aot_report import AotJob

VOCABS = (1, 100, 1271, 151936)
KS = (1, 2, 3, 5, 8, 16, MAX_FUSED_K)


def signature(dtype: str) -> dict[str, str]:
    sig = {"s_ptr": f"*{dtype}", "t_ptr": f"*{dtype}", "idx_ptr": "*i64", "a_ptr": "*fp32", "b_ptr": "*fp32"}
    sig.update(
        valid_ptr="*u8", s_stride="i64", t_stride="i64", V="i32", k="i32", KP="constexpr", BLOCK="constexpr"
    )
    return sig


def jobs() -> list[AotJob]:
    configs = sorted({launch_policy(v, k) for v, k in itertools.product(VOCABS, KS)})
    widest = max(c.block for c in configs)
    return [
        AotJob(
            label=dict(block=config.block, slots=config.slots, dtype=dtype),
            kernel=topk_union_kernel,
            signature=signature(dtype),
            constexprs=dict(KP=config.slots, BLOCK=config.block),
            num_warps=config.warps,
        )
        for config in configs
        for dtype in (("bf16", "fp32") if config.block == widest else ("bf16",))
    ]
