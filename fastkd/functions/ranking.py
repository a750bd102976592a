"""Autograd for RLKD: the ranking gradient is computed in the forward pass, on ≤ 2k columns per row."""

from __future__ import annotations

import torch

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.options import DivergenceOptions
from fastkd.functions.divergence import (
    divergence_rows,
    kernel_scale,
    refuse_double_backward,
    rescaled_gradient,
    save_fused_gradient,
)
from fastkd.ops.ranking import topk_union
from fastkd.reference.softrank import rank_loss_and_grad


def sparse_ranking(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-row loss fp32 [N], columns int64 [N, 2k] (-1 = none), ∂loss_n/∂z at them fp32 [N, 2k]).

    The fused kernel finds the union of top-k sets in one pass; the soft ranks, the correlation and its
    gradient work on the ≤ 2k gathered values in batched PyTorch (O(N·k²) work, negligible next to the
    N·V read). A row that is not finite (:func:`gathered_nonfinite`) gets loss NaN and a NaN gradient."""
    index, a, b = topk_union(student, teacher, valid, k)
    bad = gathered_nonfinite(index, a, b) & valid
    a, b = (torch.where(bad[:, None], 0.0, x) for x in (a, b))
    loss, grad = rank_loss_and_grad(a, b, index >= 0)
    loss = torch.where(bad, float("nan"), torch.where(valid, loss, 0.0))
    grad = torch.where(bad[:, None], float("nan"), grad)
    return loss.to(torch.float32), index, grad.to(torch.float32)


def gathered_nonfinite(index: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bool [N]: rows whose teacher or student holds NaN or +inf, or is −inf everywhere, read from the
    top-k union alone (no pass over V): the kernel ranks NaN and +inf first, so a row has one iff its
    gathered values do, and a row is −inf everywhere iff its largest gathered value is."""
    used = index >= 0
    bad = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
    for x in (a, b):
        hot = (x.isnan() | (x == float("inf"))) & used
        bad |= hot.any(-1) | (x.masked_fill(~used, float("-inf")).amax(-1) == float("-inf"))
    return bad


def scatter_rows(dense: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """dense[n, index[n, j]] += values[n, j] where index ≥ 0, in place and in dense's dtype.

    Columns are unique within a row, so this is gather + add + index_put (no atomics, and no fp32 copy
    of dense, which CPU's half-precision scatter makes); empty slots repeat slot 0 (the teacher's top-1,
    or column 0 with value 0 in an invalid row) so that they write the same value again."""
    keep = index >= 0
    values = values.masked_fill(~keep, 0.0)
    columns = torch.where(keep, index, index[:, :1].clamp_min(0))
    values = torch.where(keep, values, values[:, :1])
    flat = columns + torch.arange(dense.shape[0], device=dense.device)[:, None] * dense.stride(0)
    total = dense.gather(-1, columns).to(torch.float32) + values
    dense.view(-1).index_put_((flat.reshape(-1),), total.reshape(-1).to(dense.dtype))
    return dense


class RankingFunction(torch.autograd.Function):
    """RLKD's ranking loss with a sparse stored gradient: backward scatters grad_output·g into zeros."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        divisor: torch.Tensor,
        k: int,
        reduction: str,
        leading_shape: torch.Size,
    ) -> torch.Tensor:
        loss_rows, index, grad = sparse_ranking(student, teacher, valid, k)
        ctx.save_for_backward(index, grad / divisor)
        ctx.shape, ctx.dtype, ctx.reduction = student.shape, student.dtype, reduction
        return reduce_rows(loss_rows, leading_shape, divisor, reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        refuse_double_backward()
        index, grad = ctx.saved_tensors
        scale = grad_output.reshape(-1, 1) if ctx.reduction == "none" else grad_output
        dense = torch.zeros(ctx.shape, dtype=ctx.dtype, device=grad.device)
        dense = scatter_rows(dense, index, grad * scale.to(torch.float32))
        return (dense.masked_fill_(grad.isnan().any(-1, keepdim=True), float("nan")),) + (None,) * 6


class RLKDFunction(torch.autograd.Function):
    """ranking + divergence / 2: the divergence kernel writes its dense gradient (scaled by ½) and the
    ranking's ≤ 2k columns a row are added into it in the forward; backward only rescales, in place."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        labels: torch.Tensor | None,
        divisor: torch.Tensor,
        options: DivergenceOptions,
        k: int,
        leading_shape: torch.Size,
    ) -> torch.Tensor:
        grad = torch.empty_like(student)
        scale, deferred = kernel_scale(student, divisor, 0.5)
        kd_rows = divergence_rows(student, teacher, valid, labels, scale, grad, options)
        rank_rows, index, rank_grad = sparse_ranking(student, teacher, valid, k)
        scatter_rows(grad, index, rank_grad if deferred is not None else rank_grad / divisor)
        save_fused_gradient(ctx, grad, options.reduction, deferred)
        return reduce_rows(rank_rows + 0.5 * kd_rows, leading_shape, divisor, options.reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return (rescaled_gradient(ctx, grad_output),) + (None,) * 7
