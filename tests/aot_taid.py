"""AOT jobs of the TAID kernel: every launch configuration the policy can choose, bf16 / fp16 / fp32,
gradient written or loss only (evaluation)."""

from __future__ import annotations

from fastkd.kernels.taid import taid_kernel
from fastkd.ops.divergence import launch_policy
from tests.aot_divergence import VOCABS
from tests.aot_report import AotJob


def signature(dtype: str) -> dict[str, str]:
    sig = {name: f"*{dtype}" for name in ("s_ptr", "t_ptr", "g_ptr")}
    sig.update(loss_ptr="*fp32", valid_ptr="*u8", mix_ptr="*fp32", scale_ptr="*fp32")
    sig.update({name: "i64" for name in ("s_stride", "t_stride", "g_stride")}, V="i32", inv_t="fp32")
    sig.update(BLOCK="constexpr", WRITE_GRAD="constexpr")
    return sig


def jobs() -> list[AotJob]:
    return [
        AotJob(
            label=dict(block=config.block, dtype=dtype, write_grad=write),
            kernel=taid_kernel,
            signature=signature(dtype),
            constexprs=dict(BLOCK=config.block, WRITE_GRAD=write),
            num_warps=config.warps,
        )
        for config in sorted({launch_policy(v) for v in VOCABS})
        for dtype in ("bf16", "fp16", "fp32")
        for write in (True, False)
    ]
