"""AOT jobs of the backward rescale kernel, for every gradient dtype."""

from __future__ import annotations

from fastkd.kernels.rescale import rescale_kernel
from fastkd.ops.rescale import RESCALE_BLOCK, RESCALE_WARPS
from tests.aot_report import AotJob


def jobs() -> list[AotJob]:
    return [
        AotJob(
            label=dict(dtype=dtype),
            kernel=rescale_kernel,
            signature=dict(
                g_ptr=f"*{dtype}",
                scale_ptr="*fp32",
                g_stride="i64",
                scale_stride="i64",
                V="i32",
                BLOCK="constexpr",
            ),
            constexprs=dict(BLOCK=RESCALE_BLOCK),
            num_warps=RESCALE_WARPS,
        )
        for dtype in ("bf16", "fp16", "fp32")
    ]
