"""Autograd for the fused divergence family: the gradient is computed in the forward pass."""

from __future__ import annotations

import torch

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.options import DivergenceOptions
from fastkd.ops.divergence import divergence_fwd, divergence_loss
from fastkd.ops.divergence_cpu import divergence_cpu, divergence_loss_cpu
from fastkd.ops.divergence_cuda import divergence_op_for
from fastkd.ops.rescale import rescale_

DOUBLE_BACKWARD = (
    "fastkd's fused losses are differentiable once (their backward is a kernel, not an autograd "
    "graph): double backward / create_graph=True is not supported; use backend='torch', which supports it"
)


def refuse_double_backward() -> None:
    """In a backward run with ``create_graph=True`` (grad mode on): a clear error instead of a silent
    zero second derivative."""
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD)


def kernel_scale(student: torch.Tensor, divisor: torch.Tensor, factor: float = 1.0) -> tuple:
    """(the gradient factor the kernel applies, the divisor backward applies, or None).

    bf16 and fp32 take factor/divisor in the kernel, so backward is free when grad_output is 1. An fp16
    gradient scaled by 1/N in the forward underflows before GradScaler's factor arrives (fp16's
    smallest subnormal is 6e-8): the kernel writes factor·∂ℓ_n/∂z, in fp16's range, and backward
    applies grad_output/divisor (one fused rescale pass).
    """
    if student.dtype == torch.float16:
        return torch.full_like(divisor, factor), divisor
    return factor * divisor.reciprocal(), None


def save_fused_gradient(
    ctx: torch.autograd.function.FunctionCtx,
    grad: torch.Tensor,
    reduction: str,
    deferred: torch.Tensor | None = None,
) -> None:
    """Keep the gradient a fused kernel wrote in the forward (and the divisor backward still applies,
    see :func:`kernel_scale`) for :func:`rescaled_gradient`."""
    ctx.save_for_backward(grad, deferred)
    ctx.reduction = reduction
    ctx.spent = False


def rescaled_gradient(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> torch.Tensor:
    """The saved gradient times ``grad_output`` (over the deferred divisor), in place (one backward per
    forward, else an error; no double backward)."""
    refuse_double_backward()
    if ctx.spent:
        raise RuntimeError(
            "a fused fastkd loss rescales its precomputed gradient in place, so it supports one "
            "backward per forward; recompute the loss (or use backend='torch') to backward twice"
        )
    ctx.spent = True
    grad, deferred = ctx.saved_tensors
    scale = grad_output.reshape(-1) if ctx.reduction == "none" else grad_output.reshape(())
    scale = scale.to(torch.float32)
    if deferred is not None:
        scale = scale / deferred
    rescale_(grad, scale.contiguous())
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


def divergence_value(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    options: DivergenceOptions,
    backend: str = "triton",
) -> torch.Tensor:
    """Per-row losses of the fused kernel of ``backend`` without any gradient work (evaluation);
    ``"cuda"`` runs the Triton kernel's loss-only pass (the cluster kernel always writes a gradient)."""
    op = divergence_loss_cpu if backend == "cpu" else divergence_loss
    return op(
        student,
        teacher,
        valid,
        labels,
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
    tensor exists; hence one backward per forward (a second one raises), and no double backward.
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
        scale, deferred = kernel_scale(student, divisor)
        loss_rows = divergence_rows(student, teacher, valid, labels, scale, grad, options, backend)
        save_fused_gradient(ctx, grad, options.reduction, deferred)
        return reduce_rows(loss_rows, leading_shape, divisor, options.reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return (rescaled_gradient(ctx, grad_output),) + (None,) * 8
