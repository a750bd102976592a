"""Autograd for fused-linear KD: the gradients are computed in the forward pass (chunk by chunk).

Backward rescales the stored gradients of hidden states, weight and bias by ``grad_output`` in place
(the existing ``fastkd::rescale_`` op, which skips the pass when the factor is 1). With
``reduction="none"`` the per-token factors reach the weight gradient only through a new chunk pass, so
that reduction computes the loss in forward and all gradients in backward (twice the GEMMs).
"""

from __future__ import annotations

import torch

from fastkd.boundary.fused_linear import FusedLinearInputs, FusedLinearOptions, auto_chunk_size
from fastkd.boundary.inputs import reduce_rows
from fastkd.ops.fused_linear import fused_linear_fwd
from fastkd.ops.rescale import rescale_


def chunk_rows(flat: FusedLinearInputs, options: FusedLinearOptions) -> int:
    """``options.chunk_size`` or the auto size: all [chunk, V] fp32 buffers within 512 MiB (student
    logits, teacher logits (or the CE's log-sum-exp temporary without a teacher), the 1 − tanh² of a
    student cap applied outside the kernel (taid, top-k, no teacher), the half-precision GEMM copy of
    the gradient)."""
    if options.chunk_size is not None:
        return options.chunk_size
    torch_cap = options.student.cap > 0.0 and (options.taid or options.source in ("topk", "none"))
    buffers = (
        2.0 + torch_cap + (options.loss.hard_label_weight > 0.0) + 0.5 * (flat.hidden.dtype != torch.float32)
    )
    return auto_chunk_size(flat.hidden.shape[0], flat.weight.shape[0], buffers)


def run_chunks(
    flat: FusedLinearInputs,
    options: FusedLinearOptions,
    t: torch.Tensor | None,
    row_scale: torch.Tensor,
    backend: str,
    gemm_dtype: torch.dtype,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op ``fastkd::fused_linear_fwd`` on validated inputs: (loss rows, d hidden, d weight, d bias)."""
    core = options.loss
    kind = "taid" if options.taid else {"topk": "sparse", "none": "ce"}.get(options.source, "divergence")
    s, u = options.student, options.teacher
    return fused_linear_fwd(
        flat.hidden,
        flat.weight,
        flat.bias,
        flat.teacher_hidden,
        flat.teacher_weight,
        flat.teacher_bias,
        flat.teacher_logits,
        flat.topk_indices,
        flat.topk_logprobs,
        flat.rest,
        flat.valid,
        flat.labels,
        t,
        row_scale,
        kind,
        core.divergence,
        core.param,
        core.temperature,
        core.hard_label_weight,
        options.renormalize,
        [s.scale, s.cap, u.scale, u.cap],
        chunk_rows(flat, options),
        backend,
        gemm_dtype,
        options.grad_weight_dtype,
        need_grad,
    )


class FusedLinearFunction(torch.autograd.Function):
    """Fused-linear KD loss of (hidden [N, H_s], weight [V, H_s], bias [V] or None); the rest of the
    call (teacher, validity, options, backend, GEMM dtype) travels in ``flat`` and the arguments."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        flat: FusedLinearInputs,
        options: FusedLinearOptions,
        t: torch.Tensor | None,
        backend: str,
        gemm_dtype: torch.dtype,
    ) -> torch.Tensor:
        reduction = options.loss.reduction
        deferred = reduction == "none"
        need_grad = any(ctx.needs_input_grad[:3]) and not deferred
        row_scale = flat.divisor.reciprocal()
        loss_rows, *grads = run_chunks(flat, options, t, row_scale, backend, gemm_dtype, need_grad)
        ctx.call = (flat, options, t, backend, gemm_dtype) if deferred else None
        ctx.save_for_backward(*([] if deferred else grads))
        ctx.has_bias = bias is not None
        ctx.spent = False
        return reduce_rows(loss_rows, flat.leading_shape, flat.divisor, reduction)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        if ctx.spent:
            raise RuntimeError(
                "a fused fastkd loss rescales its precomputed gradient in place, so it supports one "
                "backward per forward; recompute the loss (or use backend='torch') to backward twice"
            )
        ctx.spent = True
        if ctx.call is not None:
            flat, options, t, backend, gemm_dtype = ctx.call
            scale = grad_output.reshape(-1).to(torch.float32).contiguous()
            _, grad_hidden, grad_weight, grad_bias = run_chunks(
                flat, options, t, scale, backend, gemm_dtype, True
            )
        else:
            grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
            scale = grad_output.reshape(()).to(torch.float32).contiguous()
            rescale_(grad_hidden, scale)
            rescale_(grad_weight, scale)
            rescale_(grad_bias.view(1, -1), scale)
        return grad_hidden, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None, None
