"""Pure-PyTorch RLKD ranking loss: the ``torch`` backend and readable documentation of the fused path."""

from __future__ import annotations

import torch

from fastkd.softrank import rank_loss


def topk_union_reference(
    student: torch.Tensor, teacher: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [N, 2k], slot [N, 2k]): the teacher's top-k columns, then the student's top-k columns,
    the student's duplicates of teacher columns marked invalid in ``slot``. Ties go to the lower column
    (a stable descending sort), as in the fused kernel."""
    top_t = torch.sort(teacher.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    top_s = torch.sort(student.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    dup = (top_s[:, :, None] == top_t[:, None, :]).any(-1)
    slot = torch.cat([torch.ones_like(dup), ~dup], dim=-1)
    return torch.cat([top_t, top_s], dim=-1), slot


def ranking_rows(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Per-token 1 − ρ(soft_rank(u[I]), soft_rank(z[I])) (fp32 [N], 0 at invalid tokens); autograd
    gives the student's gradient (through the gathered logits, so only at the ≤ 2k indices)."""
    index, slot = topk_union_reference(student, teacher, k)
    slot = slot & valid[:, None]
    a = teacher.detach().gather(-1, index)
    b = student.gather(-1, index)
    loss = rank_loss(a, b, slot)
    return torch.where(valid, loss, 0.0).to(torch.float32)
