"""AOT jobs of the divergence family: every divergence, hard-label term on and off, every launch
configuration the policy can choose (bf16; fp32 too for the widest tile, the register-heaviest)."""

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
    sig.update({name: "constexpr" for name in ("DIV", "HARD", "BLOCK", "SEARCH_BLOCK", "CAPS")})
    return sig


def jobs() -> list[AotJob]:
    """bf16 everywhere, fp32 for the widest tile; and the fused-linear path's configurations (fp32
    chunk logits, softcaps on both sides, fp32 or bf16 teacher) for the two real-vocabulary tiles."""
    configs = sorted({launch_policy(v) for v in VOCABS})
    pairs = [("bf16", None, 0), ("fp32", None, 0)]
    fused = [("fp32", None, 3), ("fp32", "bf16", 3)]
    return [
        AotJob(
            label=dict(
                divergence=divergence,
                block=config.block,
                hard=hard,
                dtype=dtype,
                teacher=teacher or dtype,
                caps=caps,
            ),
            kernel=divergence_kernel,
            signature=signature(dtype, teacher),
            constexprs=dict(
                DIV=DIVERGENCES.index(divergence),
                HARD=hard,
                BLOCK=config.block,
                SEARCH_BLOCK=config.search_block,
                CAPS=caps,
            ),
            num_warps=config.warps,
        )
        for divergence, config, hard in itertools.product(DIVERGENCES, configs, (False, True))
        for dtype, teacher, caps in (
            (pairs if config == configs[-1] else pairs[:1]) + (fused if config.block >= 1024 else [])
        )
    ]
