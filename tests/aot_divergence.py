"""AOT jobs of the divergence family: every divergence, hard-label term on and off, gradient written
or loss only (evaluation), every launch configuration the policy can choose (bf16; fp32 too for the
widest tile, the register-heaviest)."""

from __future__ import annotations

import itertools

from fastkd.boundary.options import DIVERGENCES
from fastkd.kernels.divergence import divergence_kernel
from fastkd.ops.divergence import launch_policy
from tests.aot_report import AotJob

VOCABS = (1, 16, 100, 1000, 1271, 2048, 4000, 32000, 151936)


def signature(dtype: str) -> dict[str, str]:
    sig = {name: f"*{dtype}" for name in ("s_ptr", "t_ptr", "g_ptr")}
    sig.update(loss_ptr="*fp32", valid_ptr="*u8", labels_ptr="*i64", scale_ptr="*fp32")
    sig.update({name: "i64" for name in ("s_stride", "t_stride", "g_stride")}, V="i32")
    sig.update({name: "fp32" for name in ("inv_t", "param", "lw1", "lw2", "hard_w")})
    sig.update({name: "constexpr" for name in ("DIV", "HARD", "BLOCK", "SEARCH_BLOCK", "WRITE_GRAD")})
    return sig


def jobs() -> list[AotJob]:
    configs = sorted({launch_policy(v) for v in VOCABS})
    return [
        AotJob(
            label=dict(divergence=divergence, block=config.block, hard=hard, dtype=dtype, write_grad=write),
            kernel=divergence_kernel,
            signature=signature(dtype),
            constexprs=dict(
                DIV=DIVERGENCES.index(divergence),
                HARD=hard,
                BLOCK=config.block,
                SEARCH_BLOCK=config.search_block,
                WRITE_GRAD=write,
            ),
            num_warps=config.warps,
        )
        for divergence, config, hard, write in itertools.product(
            DIVERGENCES, configs, (False, True), (True, False)
        )
        for dtype in (("bf16", "fp32") if config == configs[-1] else ("bf16",))
    ]
