"""fp64 oracle for TAID (arXiv 2501.16937), written from ``shared/spec/losses.md`` ("TAID").

Independent of the library: it imports nothing from ``fastkd``. Where the library mixes raw logits,
this oracle takes the spec's other reading of the same target, a geometric mixture of the two
distributions, p_t ∝ q^(1 − t)·p^t, i.e. log p_t = log_softmax((1 − t)·log q + t·log p), with q the
(detached) student and p the teacher at temperature T; the two agree because log-softmax constants
cancel. The loss is the cross-entropy −Σ p_t log q with 0·log 0 = 0; autograd (through log q only)
gives the gradient (q − p_t)/T.

``TAIDScheduleOracle`` transcribes the adaptive update of t in plain Python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tests.oracle import _cross_entropy, _reduce, valid_tokens


def _weighted(w: float, log_x: Tensor) -> Tensor:
    """w·log x, exactly 0 when w = 0 (a dropped side, even where log x = −inf)."""
    return w * log_x if w != 0.0 else torch.zeros_like(log_x)


def oracle_taid(
    student: Tensor,
    teacher: Tensor,
    t: float,
    *,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """fp64 TAID loss; student / teacher logits [..., V]; ``t`` a Python float in [0, 1]."""
    if student.shape != teacher.shape:
        raise ValueError(f"shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    lead, vocab = student.shape[:-1], student.shape[-1]
    valid = valid_tokens(lead, student.device, labels, mask, ignore_index)
    keep = valid[:, None]
    z = torch.where(keep, student.to(torch.float64).reshape(-1, vocab), 0.0)
    u = torch.where(keep, teacher.detach().to(torch.float64).reshape(-1, vocab), 0.0)
    log_q = torch.log_softmax(z / temperature, dim=-1)
    log_p = torch.log_softmax(u / temperature, dim=-1)
    mixed = _weighted(1.0 - t, log_q.detach()) + _weighted(t, log_p)
    log_target = torch.log_softmax(mixed, dim=-1)
    loss = torch.where(valid, _cross_entropy(log_target, log_q), 0.0)
    return _reduce(loss, valid, lead, reduction, num_items_in_batch)


class TAIDScheduleOracle:
    """The spec's adaptive t, in Python floats; ``branch`` records which term set t at each update."""

    def __init__(self, total_steps: int, t_start=0.4, t_end=1.0, alpha=5e-4, beta=0.99) -> None:
        self.total_steps, self.t_start, self.t_end = total_steps, t_start, t_end
        self.alpha, self.beta = alpha, beta
        self.t, self.prev_J, self.m, self.step = t_start, None, 0.0, 0
        self.branches: list[str] = []

    def update(self, J: float) -> float:
        if self.prev_J is None:
            self.prev_J = J
            self.branches.append("first")
        else:
            delta = (self.prev_J - J) / (self.prev_J + 1e-15)
            self.m = self.beta * self.m + (1 - self.beta) * delta
            t_lin = self.t_start + (self.t_end - self.t_start) * self.step / self.total_steps
            adaptive = self.t + self.alpha * (1 / (1 + math.exp(-self.m))) * (1 - self.t)
            new_t = min(self.t_end, max(t_lin, adaptive))
            self.branches.append(
                "t_end" if new_t == self.t_end else ("linear" if t_lin >= adaptive else "adaptive")
            )
            self.t = new_t
            self.prev_J = J
        self.step += 1
        return self.t
