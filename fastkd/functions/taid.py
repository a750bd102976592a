"""Autograd for the fused TAID loss: the gradient is computed in the forward pass."""

from __future__ import annotations

import torch

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.options import DivergenceOptions
from fastkd.functions.divergence import kernel_scale, rescaled_gradient, save_fused_gradient
from fastkd.ops.taid import taid_rows


class TAIDFunction(torch.autograd.Function):
    """TAID loss whose kernel writes ∂loss/∂student in the forward pass.

    Inputs are the flattened [N, V] student and teacher, the bool [N] valid tokens, the fp32 0-dim
    interpolation weight t (no gradient), the mean's fp32 divisor, the options (temperature and
    reduction are used), the loss's leading shape, whether to write the gradient over the student and
    the fused backend ("triton": op ``fastkd::taid_fwd``; "cpu": ``fastkd::taid_cpu``). Backward
    rescales the stored gradient by ``grad_output`` in place, as
    :class:`~fastkd.functions.divergence.DivergenceFunction` does.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        t: torch.Tensor,
        divisor: torch.Tensor,
        options: DivergenceOptions,
        leading_shape: torch.Size,
        inplace_grad: bool,
        backend: str,
    ) -> torch.Tensor:
        grad = student if inplace_grad else torch.empty_like(student)
        scale, deferred = kernel_scale(student, divisor)
        loss_rows = taid_rows(backend, student, teacher, valid, t, scale, grad, options.temperature)
        save_fused_gradient(ctx, grad, options.reduction, deferred)
        return reduce_rows(loss_rows, leading_shape, divisor, options.reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return (rescaled_gradient(ctx, grad_output),) + (None,) * 8
