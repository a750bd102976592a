"""Pure-PyTorch fused-linear KD: materialise the logits, then the logit-level reference; autograd does
the rest. This is the ``torch`` backend and the benchmarks' eager baseline: memory-hungry by design
(it holds the [N, V] logits of both models, their fp32 copies and autograd's buffers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.boundary.fused_linear import FusedLinearInputs, FusedLinearOptions, LogitTransform
from fastkd.boundary.inputs import FlatInputs, reduce_rows
from fastkd.boundary.sparse import SparseInputs, SparseOptions
from fastkd.reference.divergence import divergence_loss, nonfinite_rows, poison_rows
from fastkd.reference.sparse import sparse_kl_loss
from fastkd.reference.taid import taid_loss


def project(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transform: LogitTransform
) -> torch.Tensor:
    """softcap(s·(h Wᵀ + b)) in fp32 (fp64 for fp64 hidden states), [N, V]."""
    compute = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = hidden.to(compute) @ weight.to(compute).t()
    if bias is not None:
        logits = logits + bias.to(compute)
    if transform.scale != 1.0:
        logits = logits * transform.scale
    if transform.cap > 0.0:
        logits = transform.cap * torch.tanh(logits / transform.cap)
    return logits


def teacher_logits(flat: FusedLinearInputs, options: FusedLinearOptions) -> torch.Tensor:
    """The teacher's [N, V] logits of a hidden-state or logits source (transformed, detached)."""
    if flat.teacher_hidden is not None:
        return project(flat.teacher_hidden, flat.teacher_weight, flat.teacher_bias, options.teacher).detach()
    u = flat.teacher_logits.to(torch.float64 if flat.teacher_logits.dtype == torch.float64 else torch.float32)
    transform = options.teacher
    u = u * transform.scale if transform.scale != 1.0 else u
    return transform.cap * torch.tanh(u / transform.cap) if transform.cap > 0.0 else u


def cross_entropy_loss(student: torch.Tensor, flat: FusedLinearInputs, reduction: str) -> torch.Tensor:
    """The teacher-free loss (hard_label_weight = 1): CE(z, label) of the [N, V] student logits, reduced;
    a row whose log-sum-exp is not finite is NaN (loss and gradient), as in the logit-level losses."""
    z = student.masked_fill(~flat.valid[:, None], 0.0)
    bad = nonfinite_rows(z, z)
    targets = flat.labels.masked_fill(~flat.valid, 0)
    hard = F.cross_entropy(z.masked_fill(bad[:, None], 0.0), targets, reduction="none")
    rows = torch.where(flat.valid, poison_rows(hard, z, bad), 0.0)
    return reduce_rows(rows, flat.leading_shape, flat.divisor, reduction)


def fused_linear_loss(
    flat: FusedLinearInputs, options: FusedLinearOptions, t: torch.Tensor | None
) -> torch.Tensor:
    """The reduced loss on validated, flattened inputs, through materialised logits."""
    student = project(flat.hidden, flat.weight, flat.bias, options.student)
    if options.source == "none":
        return cross_entropy_loss(student, flat, options.loss.reduction)
    if options.source == "topk":
        sparse = SparseInputs(
            student=student,
            indices=flat.topk_indices,
            logprobs=flat.topk_logprobs,
            rest=flat.rest,
            valid=flat.valid,
            all_valid=False,
            leading_shape=flat.leading_shape,
            divisor=flat.divisor,
        )
        core = options.loss
        sparse_options = SparseOptions(
            options.renormalize, core.temperature, core.reduction, core.ignore_index
        )
        return sparse_kl_loss(sparse, sparse_options)
    logits = FlatInputs(
        student=student,
        teacher=teacher_logits(flat, options),
        valid=flat.valid,
        labels=flat.labels,
        leading_shape=flat.leading_shape,
        divisor=flat.divisor,
    )
    if options.taid:
        return taid_loss(logits, t, options.loss)
    return divergence_loss(logits, options.loss)
