"""AOT jobs of the sparse-teacher KL kernel: with and without the rest bucket, every launch
vocabulary tile of the policy with the smallest slot chunk, and the widest tile with the largest one
(bf16; fp32 too for that widest configuration, the register-heaviest); gradient written or loss only."""

from __future__ import annotations

import itertools

from fastkd.kernels.sparse import sparse_kl_kernel
from fastkd.ops.sparse import launch_policy
from tests.aot_report import AotJob

VOCABS = (100, 1000, 1271, 32000, 151936)
KS = (1, 4096)


def signature(dtype: str) -> dict[str, str]:
    sig = {"s_ptr": f"*{dtype}", "idx_ptr": "*i64", "lp_ptr": "*fp32", "rest_ptr": "*fp32"}
    sig.update(g_ptr=f"*{dtype}", loss_ptr="*fp32", valid_ptr="*u8", scale_ptr="*fp32")
    sig.update(s_stride="i64", g_stride="i64", V="i32", k="i32", inv_t="fp32")
    sig.update({name: "constexpr" for name in ("REST", "BLOCK", "K_BLOCK", "WRITE_GRAD")})
    return sig


def jobs() -> list[AotJob]:
    configs = sorted({launch_policy(v, k) for v in VOCABS for k in KS if k <= v})
    return [
        AotJob(
            label=dict(rest=rest, block=config.block, k_block=config.k_block, dtype=dtype, write_grad=write),
            kernel=sparse_kl_kernel,
            signature=signature(dtype),
            constexprs=dict(REST=rest, BLOCK=config.block, K_BLOCK=config.k_block, WRITE_GRAD=write),
            num_warps=config.warps,
        )
        for config, rest, write in itertools.product(configs, (False, True), (True, False))
        for dtype in (("bf16", "fp32") if config == configs[-1] else ("bf16",))
    ]
