"""AOT jobs of the divergence family: every divergence, hard-label term on and off, gradient written
or loss only (evaluation), every launch configuration the policy can choose (bf16; fp32 too for the
widest tile, the register-heaviest); and the fused-linear path's configurations: fp32 chunk logits
with a softcap on the student, the teacher or both (CAPS = 1, 2, 3), fp32 or bf16 teacher, gradient
written, in the policy's one configuration under a softcap."""

from __future__ import annotations

import itertools

from fastkd.boundary.options import DIVERGENCES
from fastkd.kernels.divergence import divergence_kernel
from fastkd.ops.divergence import launch_policy
from tests.aot_report import AotJob

VOCABS = (1, 16, 100, 1000, 1271, 2048, 4000, 32000, 151936)


def signature(dtype: str, teacher: str | None = None) -> dict[str, str]:
    sig = {name: f"*{dtype}" for name in ("s_ptr", "t_ptr", "g_ptr")}
    sig["t_ptr"] = f"*{teacher or dtype}"
    sig.update(loss_ptr="*fp32", valid_ptr="*u8", labels_ptr="*i64", scale_ptr="*fp32")
    sig.update({name: "i64" for name in ("s_stride", "t_stride", "g_stride")}, V="i32")
    sig.update({name: "fp32" for name in ("inv_t", "param", "lw1", "lw2", "hard_w", "s_cap", "t_cap")})
    sig.update({name: "constexpr" for name in ("DIV", "HARD", "BLOCK", "SEARCH_BLOCK", "WRITE_GRAD", "CAPS")})
    return sig


def _job(divergence: str, config, hard: bool, write: bool, dtype: str, teacher: str | None, caps: int):
    label = dict(divergence=divergence, block=config.block, hard=hard, dtype=dtype, write_grad=write)
    return AotJob(
        label={**label, "teacher": teacher or dtype, "caps": caps},
        kernel=divergence_kernel,
        signature=signature(dtype, teacher),
        constexprs=dict(
            DIV=DIVERGENCES.index(divergence),
            HARD=hard,
            BLOCK=config.block,
            SEARCH_BLOCK=config.search_block,
            WRITE_GRAD=write,
            CAPS=caps,
        ),
        num_warps=config.warps,
    )


def jobs() -> list[AotJob]:
    configs = sorted({launch_policy(v) for v in VOCABS})
    logit_level = [
        _job(divergence, config, hard, write, dtype, None, 0)
        for divergence, config, hard, write in itertools.product(
            DIVERGENCES, configs, (False, True), (True, False)
        )
        for dtype in (("bf16", "fp32") if config == configs[-1] else ("bf16",))
    ]
    capped = sorted({launch_policy(v, capped=True) for v in VOCABS})
    fused_linear = [
        _job(divergence, config, hard, True, "fp32", teacher, caps)
        for divergence, config, hard, teacher, caps in itertools.product(
            DIVERGENCES, capped, (False, True), (None, "bf16"), (1, 2, 3)
        )
    ]
    return logit_level + fused_linear
