"""AOT jobs of the vocabulary-parallel entries (fastkd.parallel) of the divergence, TAID and sparse kernels:
the widest launch configuration (the register-heaviest), bf16; every phase once, the gradient phase
for a divergence of each kind of term (closed-form c, mixture, |p − q|), hard-label term on."""

from __future__ import annotations

from fastkd.boundary.options import DIVERGENCES
from fastkd.boundary.parallel import GRAD, ROW_SUM, STATS
from fastkd.kernels.divergence import divergence_shard_kernel
from fastkd.kernels.sparse import sparse_kl_shard_kernel
from fastkd.kernels.taid import taid_shard_kernel
from fastkd.ops.divergence import launch_policy
from fastkd.ops.sparse import launch_policy as sparse_launch_policy
from tests.aot_divergence import signature as divergence_signature
from tests.aot_report import AotJob
from tests.aot_sparse import signature as sparse_signature
from tests.aot_taid import signature as taid_signature

CONFIG = launch_policy(151936)
DIVERGENCE_PHASES = (
    ("forward_kl", STATS),
    ("jsd", ROW_SUM),
    ("forward_kl", GRAD),
    ("skew_reverse_kl", GRAD),
    ("tvd", GRAD),
)


def _signature(base: dict[str, str]) -> dict[str, str]:
    sig = {}
    for name, kind in base.items():
        if name == "valid_ptr":
            sig["stats_ptr"] = "*fp32"
        sig[name] = kind
    # the sliced entries always write their gradient and take no softcaps
    for name in ("SEARCH_BLOCK", "WRITE_GRAD", "CAPS", "s_cap", "t_cap"):
        sig.pop(name, None)
    sig["PHASE"] = "constexpr"
    if "K_BLOCK" in sig:  # constexprs last, in the kernel's order
        sig["K_BLOCK"] = sig.pop("K_BLOCK")
    return sig


def jobs() -> list[AotJob]:
    out = [
        AotJob(
            label=dict(kernel="divergence", divergence=divergence, phase=phase),
            kernel=divergence_shard_kernel,
            signature=_signature(divergence_signature("bf16")),
            constexprs=dict(DIV=DIVERGENCES.index(divergence), HARD=True, PHASE=phase, BLOCK=CONFIG.block),
            num_warps=CONFIG.warps,
        )
        for divergence, phase in DIVERGENCE_PHASES
    ]
    out += [
        AotJob(
            label=dict(kernel="taid", phase=phase),
            kernel=taid_shard_kernel,
            signature=_signature(taid_signature("bf16")),
            constexprs=dict(PHASE=phase, BLOCK=CONFIG.block),
            num_warps=CONFIG.warps,
        )
        for phase in (STATS, GRAD)
    ]
    sparse = sparse_launch_policy(151936, 4096)
    out += [
        AotJob(
            label=dict(kernel="sparse", phase=phase),
            kernel=sparse_kl_shard_kernel,
            signature=_signature(sparse_signature("bf16")),
            constexprs=dict(REST=True, PHASE=phase, BLOCK=sparse.block, K_BLOCK=sparse.k_block),
            num_warps=sparse.warps,
        )
        for phase in (STATS, GRAD)
    ]
    return out
