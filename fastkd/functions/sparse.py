"""Autograd for the fused sparse-teacher KL: the gradient is computed in the forward pass."""

from __future__ import annotations

import torch

from fastkd.boundary.inputs import gradient_wanted, reduce_rows, unit_stride
from fastkd.boundary.sparse import SparseInputs, SparseOptions
from fastkd.functions.divergence import kernel_scale, rescaled_gradient, save_fused_gradient
from fastkd.ops.sparse import sparse_kl_cpu, sparse_kl_fwd, sparse_kl_loss, sparse_kl_loss_cpu


class SparseKLFunction(torch.autograd.Function):
    """Sparse-teacher KL whose kernel writes ∂loss/∂student in the forward pass.

    Inputs are the flattened [N, V] student, the teacher's int64 indices and log-probs [N, k], its log
    rest mass [N], the bool [N] valid tokens, the mean's fp32 divisor, the options, the loss's
    leading shape and the fused backend ("triton": op ``fastkd::sparse_kl_fwd``; "cpu":
    ``fastkd::sparse_kl_cpu``). Backward only rescales the stored gradient in place (one backward per
    forward).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        indices: torch.Tensor,
        logprobs: torch.Tensor,
        rest: torch.Tensor,
        valid: torch.Tensor,
        divisor: torch.Tensor,
        options: SparseOptions,
        leading_shape: torch.Size,
        backend: str,
    ) -> torch.Tensor:
        grad = torch.empty_like(student)
        scale, deferred = kernel_scale(student, divisor)
        op = sparse_kl_cpu if backend == "cpu" else sparse_kl_fwd
        loss_rows = op(
            student,
            indices,
            logprobs,
            rest,
            valid,
            scale,
            grad,
            options.renormalize,
            options.temperature,
        )
        save_fused_gradient(ctx, grad, options.reduction, deferred)
        return reduce_rows(loss_rows, leading_shape, divisor, options.reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        return (rescaled_gradient(ctx, grad_output),) + (None,) * 8


def sparse_kl_fused(flat: SparseInputs, options: SparseOptions, backend: str = "triton") -> torch.Tensor:
    """The reduced loss of the fused ``backend`` ("triton" or "cpu") on validated, flattened inputs (the
    loss only, without autograd)."""
    if not gradient_wanted(flat.student):
        op = sparse_kl_loss_cpu if backend == "cpu" else sparse_kl_loss
        rows = op(
            unit_stride(flat.student),
            flat.indices,
            flat.logprobs,
            flat.rest,
            flat.valid,
            options.renormalize,
            options.temperature,
        )
        return reduce_rows(rows, flat.leading_shape, flat.divisor, options.reduction)
    return SparseKLFunction.apply(
        unit_stride(flat.student),
        flat.indices,
        flat.logprobs,
        flat.rest,
        flat.valid,
        flat.divisor,
        options,
        flat.leading_shape,
        backend,
    )
