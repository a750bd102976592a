"""Autograd for the fused divergence family: the gradient is computed in the forward pass."""

from __future__ import annotations

import torch

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.options import DivergenceOptions
from fastkd.ops.divergence import divergence_fwd
from fastkd.ops.divergence_cpu import divergence_cpu
from fastkd.ops.divergence_cuda import divergence_op_for
from fastkd.ops.rescale import rescale_


def save_fused_gradient(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor, reduction: str) -> None:
    """Keep the gradient a fused kernel wrote in the forward for :func:`rescaled_gradient`."""
    ctx.save_for_backward(grad)
    ctx.reduction = reduction
    ctx.spent = False


def rescaled_gradient(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> torch.Tensor:
    """The saved gradient times ``grad_output``, in place (one backward per forward, else an error)."""
    if ctx.spent:
        raise RuntimeError(
            "a fused fastkd loss rescales its precomputed gradient in place, so it supports one "
            "backward per forward; recompute the loss (or use backend='torch') to backward twice"
        )
    ctx.spent = True
    (grad,) = ctx.saved_tensors
    scale = grad_output.reshape(-1) if ctx.reduction == "none" else grad_output.reshape(())
    rescale_(grad, scale.to(torch.float32).contiguous())
    return grad


def divergence_rows(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    grad_scale: torch.Tensor,
    grad: torch.Tensor,
    options: DivergenceOptions,
    backend: str = "triton",
) -> torch.Tensor:
    """Per-row losses of the fused kernel of ``backend`` (``"triton"``, ``"cuda"`` or ``"cpu"``), which
    writes ∂loss_n/∂student · ``grad_scale`` into ``grad``."""
    if backend == "cuda":
        op = divergence_op_for(student, teacher)
    else:
        op = divergence_cpu if backend == "cpu" else divergence_fwd
    return op(
        student,
        teacher,
        valid,
        labels,
        grad_scale,
        grad,
        options.divergence,
        options.param,
        options.temperature,
        options.hard_label_weight,
    )


class DivergenceFunction(torch.autograd.Function):
    """Loss of a KD divergence whose kernel writes ∂loss/∂student in the forward pass.

    Inputs are the flattened [N, V] student and teacher, the bool [N] valid tokens, int64 [N] labels
    (or None), the mean's fp32 divisor, the options, the loss's leading shape (for ``"none"``), whether
    to write the gradient over the student, and the fused backend: ``"triton"`` (op
    ``fastkd::divergence_fwd``), ``"cuda"`` (op ``fastkd::divergence_cuda``, the Hopper cluster kernels)
    or ``"cpu"`` (op ``fastkd::divergence_cpu``, the C++ kernels).
    Backward only rescales the stored gradient by ``grad_output``, in place, so no second [N, V]
    tensor exists; hence one backward per forward (a second one raises).
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
        backend: str,
    ) -> torch.Tensor:
        grad = student if inplace_grad else torch.empty_like(student)
        loss_rows = divergence_rows(
            student, teacher, valid, labels, divisor.reciprocal(), grad, options, backend
        )
        save_fused_gradient(ctx, grad, options.reduction)
        return reduce_rows(loss_rows, leading_shape, divisor, options.reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return (rescaled_gradient(ctx, grad_output),) + (None,) * 8
