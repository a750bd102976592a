"""AOT jobs of the SinKD kernels: every launch configuration the policy can choose, for each kernel
(cost with and without D), in bf16 and fp32 logits."""

from __future__ import annotations

from fastkd.kernels.sinkhorn import cost_grad_kernel, cost_kernel, row_lse_kernel
from fastkd.ops.sinkhorn import launch_policy
from tests.aot_report import AotJob

SHAPES = ((512, 2), (3, 32000), (64, 32000), (64, 100))
DTYPES = ("bf16", "fp32")


def _pointers(dtype: str, names: tuple[str, ...]) -> dict[str, str]:
    return {name: f"*{dtype}" for name in names}


def _lse_job(config: object, dtype: str) -> AotJob:
    sig = _pointers(dtype, ("s_ptr", "t_ptr")) | _pointers("fp32", ("lse_s_ptr", "lse_t_ptr"))
    sig |= dict(s_stride="i64", t_stride="i64", V="i32", inv_tau="fp32", BLOCK="constexpr")
    return AotJob(
        label=dict(kernel="row_lse", block=config.lse_block, dtype=dtype),
        kernel=row_lse_kernel,
        signature=sig,
        constexprs=dict(BLOCK=config.lse_block),
        num_warps=config.warps,
    )


def _tiles(config: object) -> dict[str, int]:
    return dict(BI=config.block_i, BJ=config.block_j, BV=config.block_v)


def _cost_job(config: object, dtype: str, with_d: bool) -> AotJob:
    sig = _pointers(dtype, ("s_ptr", "t_ptr")) | _pointers("fp32", ("lse_s_ptr", "lse_t_ptr"))
    sig |= dict(valid_ptr="*u8", w_ptr="*fp32", d_ptr="*fp32", s_stride="i64", t_stride="i64")
    sig |= dict(B="i32", V="i32", inv_tau="fp32", WITH_D="constexpr", BI="constexpr", BJ="constexpr")
    sig |= dict(BV="constexpr")
    return AotJob(
        label=dict(kernel="cost", with_d=with_d, tiles=tuple(_tiles(config).values()), dtype=dtype),
        kernel=cost_kernel,
        signature=sig,
        constexprs=dict(WITH_D=with_d, **_tiles(config)),
        num_warps=config.warps,
    )


def _grad_job(config: object, dtype: str) -> AotJob:
    sig = _pointers(dtype, ("s_ptr", "t_ptr")) | _pointers("fp32", ("lse_s_ptr", "lse_t_ptr"))
    sig |= dict(valid_ptr="*u8", g_ptr="*fp32", c_ptr="*fp32", grad_ptr=f"*{dtype}")
    sig |= dict(s_stride="i64", t_stride="i64", grad_stride="i64", B="i32", V="i32", inv_tau="fp32")
    sig |= dict(BI="constexpr", BJ="constexpr", BV="constexpr")
    return AotJob(
        label=dict(kernel="cost_grad", tiles=tuple(_tiles(config).values()), dtype=dtype),
        kernel=cost_grad_kernel,
        signature=sig,
        constexprs=_tiles(config),
        num_warps=config.warps,
    )


def jobs() -> list[AotJob]:
    configs = sorted({launch_policy(rows, vocab) for rows, vocab in SHAPES})
    lse_configs = {c.lse_block: c for c in configs}.values()
    configs = {(c.block_i, c.block_j, c.block_v): c for c in configs}.values()
    out = [_lse_job(c, dtype) for c in lse_configs for dtype in DTYPES]
    out += [_cost_job(c, dtype, with_d) for c in configs for dtype in DTYPES for with_d in (False, True)]
    out += [_grad_job(c, dtype) for c in configs for dtype in DTYPES]
    return out
