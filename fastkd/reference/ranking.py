"""Pure-PyTorch RLKD ranking loss: the ``torch`` backend and readable documentation of the fused path."""

from __future__ import annotations

import torch

from fastkd.reference.divergence import nonfinite_rows, poison_rows
from fastkd.reference.softrank import rank_loss


def top_k_columns(x: torch.Tensor, k: int) -> torch.Tensor:
    """Columns [N, k] of the k largest values of each row; ties at the k-th value go to the lower
    columns (a stable descending sort's choice, as in the fused kernel), without sorting the row."""
    kth = x.topk(k, dim=-1).values[:, -1:]
    order = -torch.arange(x.shape[-1], device=x.device, dtype=torch.float32)  # exact for V < 2**24
    key = torch.where(x > kth, float("inf"), torch.where(x == kth, order, float("-inf")))
    return key.topk(k, dim=-1).indices  # every value above the k-th, then the lowest tied columns


def topk_union_reference(
    student: torch.Tensor, teacher: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [N, 2k], slot [N, 2k]): the teacher's top-k columns, then the student's top-k columns,
    the student's duplicates of teacher columns marked invalid in ``slot``."""
    top_t = top_k_columns(teacher.detach(), k)
    top_s = top_k_columns(student.detach(), k)
    dup = (top_s[:, :, None] == top_t[:, None, :]).any(-1)
    slot = torch.cat([torch.ones_like(dup), ~dup], dim=-1)
    return torch.cat([top_t, top_s], dim=-1), slot


def ranking_rows(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Per-token 1 − ρ(soft_rank(u[I]), soft_rank(z[I])) (fp32 [N], 0 at invalid tokens); autograd
    gives the student's gradient (through the gathered logits, so only at the ≤ 2k indices). A valid
    row with NaN or +inf, or −inf everywhere, in either input has loss NaN and a NaN gradient row."""
    bad = nonfinite_rows(teacher.detach().to(torch.float32), student.detach().to(torch.float32)) & valid
    raw = student
    student, teacher = (torch.where(bad[:, None], 0.0, x) for x in (student, teacher))
    index, slot = topk_union_reference(student, teacher, k)
    slot = slot & valid[:, None]
    a = teacher.detach().gather(-1, index)
    b = student.gather(-1, index)
    loss = poison_rows(rank_loss(a, b, slot), raw, bad)
    return torch.where(valid, loss, 0.0).to(torch.float32)
