"""Autograd for the fused divergence family: the gradient is computed in the forward pass."""

from __future__ import annotations

import torch

from fastkd.inputs import reduce_rows
from fastkd.ops.divergence import divergence_fwd
from fastkd.options import DivergenceOptions


class PrecomputedGradientFunction(torch.autograd.Function):
    """Base of the fused losses: forward computes ∂loss/∂(first input), already scaled by the reduction,
    and stores it with :meth:`save_gradient`; backward only rescales it by ``grad_output``, in place, so
    no second [N, V] tensor exists; hence one backward per forward (a second one raises)."""

    @staticmethod
    def save_gradient(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor, reduction: str) -> None:
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        ctx.spent = False

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        if ctx.spent:
            raise RuntimeError(
                "a fused fastkd loss rescales its precomputed gradient in place, so it supports one "
                "backward per forward; recompute the loss (or use backend='torch') to backward twice"
            )
        ctx.spent = True
        (grad,) = ctx.saved_tensors
        scale = grad_output.reshape(-1, 1) if ctx.reduction == "none" else grad_output
        return (grad.mul_(scale.to(torch.float32)),) + (None,) * (len(ctx.needs_input_grad) - 1)


class DivergenceFunction(PrecomputedGradientFunction):
    """Loss of a KD divergence whose kernel writes ∂loss/∂student in the forward pass.

    Inputs are the flattened [N, V] student and teacher, the bool [N] valid tokens, int64 [N] labels
    (or None), the mean's fp32 divisor, the options and the loss's leading shape (for ``"none"``).
    Backward only rescales the stored gradient (see :class:`PrecomputedGradientFunction`).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        labels: torch.Tensor | None,
        divisor: torch.Tensor,
        options: DivergenceOptions,
        leading_shape: torch.Size,
        inplace_grad: bool,
    ) -> torch.Tensor:
        grad = student if inplace_grad else torch.empty_like(student)
        loss_rows = divergence_fwd(
            student,
            teacher,
            valid,
            labels,
            divisor.reciprocal(),
            grad,
            options.divergence,
            options.param,
            options.temperature,
            options.hard_label_weight,
        )
        DivergenceFunction.save_gradient(ctx, grad, options.reduction)
        return reduce_rows(loss_rows, leading_shape, divisor, options.reduction)
