"""Pure-PyTorch TAID (arXiv 2501.16937): the ``torch`` backend of :func:`fastkd.losses.taid`.

With b = z/T (student) and a = u/T (teacher), the target is p_t = softmax((1 − t)·stopgrad(b) + t·a)
and the per-token loss is the cross-entropy ℓ = −Σ p_t log q, q = softmax(b) (``shared/spec/losses.md``,
"TAID"). Autograd supplies the gradient (q − p_t)/T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.boundary.inputs import FlatInputs, reduce_rows
from fastkd.boundary.options import DivergenceOptions
from fastkd.reference.divergence import nonfinite_rows, poison_rows


def interpolated_logits(b: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 − t)·b + t·a without gradient, a side with weight 0 dropped entirely (t = 0 or 1), so that
    its −inf entries give no 0·(−inf) = NaN; real NaN stays NaN."""
    with torch.no_grad():
        student_part = torch.where(t < 1, (1 - t) * b, 0.0)
        return student_part + torch.where(t > 0, t * a, 0.0)


def taid_per_token(b: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ℓ = −Σ p_t log q from tempered logits b (student) and a (teacher) [N, V]; ``t`` a 0-dim tensor.

    p_t ≥ 0, so zeroing log q where p_t = 0 is all 0·log 0 = 0 needs (p_t > 0 at log q = −inf gives +inf).
    """
    lq = F.log_softmax(b, dim=-1)
    target = F.softmax(interpolated_logits(b, a, t), dim=-1)
    return -(target * lq.masked_fill(target == 0, 0.0)).sum(-1)


def taid_rows(flat: FlatInputs, t: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """Per-token TAID loss [N] (fp32, or fp64 for fp64 inputs), 0 at invalid tokens; NaN (and a NaN
    gradient row) where either row holds NaN or +inf or is −inf everywhere."""
    compute = torch.float64 if flat.student.dtype == torch.float64 else torch.float32
    keep = flat.valid[:, None]
    student = flat.student.to(compute).masked_fill(~keep, 0.0)
    teacher = flat.teacher.to(compute).masked_fill(~keep, 0.0)
    if options.temperature != 1.0:
        student, teacher = student / options.temperature, teacher / options.temperature
    bad = nonfinite_rows(teacher, student)
    uniform = torch.where(bad[:, None], 0.0, student)  # a harmless row where the inputs are not finite
    loss = taid_per_token(uniform, torch.where(bad[:, None], 0.0, teacher), t.to(compute))
    return torch.where(flat.valid, poison_rows(loss, student, bad), 0.0)


def taid_loss(flat: FlatInputs, t: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """The reduced TAID loss on validated, flattened inputs."""
    return reduce_rows(taid_rows(flat, t, options), flat.leading_shape, flat.divisor, options.reduction)
