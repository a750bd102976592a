"""Pure-PyTorch TAID (arXiv 2501.16937): the ``torch`` backend of :func:`fastkd.losses.taid`.

With b = z/T (student) and a = u/T (teacher), the target is p_t = softmax((1 − t)·stopgrad(b) + t·a)
and the per-token loss is the cross-entropy ℓ = −Σ p_t log q, q = softmax(b) (``shared/spec/losses.md``,
"TAID"). Autograd supplies the gradient (q − p_t)/T. Kept apart from ``reference.py`` so that each loss
family's reference is one obvious file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.inputs import FlatInputs, reduce_rows
from fastkd.options import DivergenceOptions


def interpolated_logits(b: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 − t)·b + t·a, a side with weight 0 dropped entirely (no 0·(−inf) = NaN at t = 0 or 1)."""
    student_part = torch.where(t < 1, (1 - t) * b, 0.0)
    teacher_part = torch.where(t > 0, t * a, 0.0)
    return student_part + teacher_part


def taid_per_token(b: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ℓ = −Σ p_t log q from tempered logits b (student) and a (teacher) [N, V]; ``t`` a 0-dim tensor."""
    lq = F.log_softmax(b, dim=-1)
    target = F.softmax(interpolated_logits(b.detach(), a, t), dim=-1)
    return -torch.where(target > 0, target * lq.masked_fill(target == 0, 0.0), 0.0).sum(-1)


def taid_rows(flat: FlatInputs, t: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """Per-token TAID loss [N] (fp32, or fp64 for fp64 inputs), 0 at invalid tokens."""
    compute = torch.float64 if flat.student.dtype == torch.float64 else torch.float32
    keep = flat.valid[:, None]
    student = flat.student.to(compute).masked_fill(~keep, 0.0)
    teacher = flat.teacher.to(compute).masked_fill(~keep, 0.0)
    temperature = options.temperature
    loss = taid_per_token(student / temperature, teacher / temperature, t.to(compute))
    return torch.where(flat.valid, loss, 0.0)


def taid_loss(flat: FlatInputs, t: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """The reduced TAID loss on validated, flattened inputs."""
    return reduce_rows(taid_rows(flat, t, options), flat.leading_shape, flat.divisor, options.reduction)
