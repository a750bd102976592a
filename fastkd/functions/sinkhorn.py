"""Autograd for SinKD: cost kernel and Sinkhorn iterations forward; the backward recomputes the
iterations from W (fastkd/ops/sinkhorn_plan.py) and runs the gradient kernel, so no copy of the plan
per iteration is ever stored."""

from __future__ import annotations

import torch

from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functions.divergence import refuse_double_backward
from fastkd.ops.sinkhorn import sinkhorn_cost, sinkhorn_cost_grad
from fastkd.ops.sinkhorn_plan import Scalings, plan_backward, plan_forward


class SinkhornFunction(torch.autograd.Function):
    """S = scale·Σ Π⊙W of flattened [B, V] student/teacher logits and bool [B] valid rows.

    ``impl`` is "triton" (kernels/sinkhorn.py) or "torch" (the same computation in chunked PyTorch ops).
    Saved for backward: the logits (inputs), W and (Triton) D, both B×B, two [B] log-sum-exps and the
    2·n_iters scaling vectors of [B].
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        valid: torch.Tensor,
        options: SinkhornOptions,
        impl: str,
    ) -> torch.Tensor:
        inv_tau = 1.0 / options.tau
        with_d = bool(ctx.needs_input_grad[0]) and impl == "triton"
        w, d, lse_s, lse_t = sinkhorn_cost(student, teacher, valid, inv_tau, with_d, impl)
        log_domain = options.use_log_domain(student.shape[0])
        plan, scalings = plan_forward(w, valid, options.epsilon, options.n_iters, log_domain)
        ctx.save_for_backward(student, teacher, valid, w, d, lse_s, lse_t, *scalings)
        ctx.options, ctx.impl, ctx.log_domain = options, impl, log_domain
        return options.scale * (plan * w).sum()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        refuse_double_backward()
        student, teacher, valid, w, d, lse_s, lse_t, rows, cols = ctx.saved_tensors
        options = ctx.options
        weight = grad_output.to(w.dtype) * options.scale
        g = plan_backward(w, valid, options.epsilon, ctx.log_domain, Scalings(rows, cols), weight)
        grad = sinkhorn_cost_grad(student, teacher, valid, lse_s, lse_t, g, d, 1.0 / options.tau, ctx.impl)
        return grad, None, None, None, None
