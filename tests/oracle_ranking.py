"""fp64 oracle of RLKD's ranking loss, written from shared/spec/losses.md; imports nothing from fastkd.

Slow and plain on purpose: Python-level top-k with an explicit tie rule (higher value first, then lower
column), a Python set union, pool-adjacent-violators on Python lists of tensors (autograd gives the
gradient), Pearson correlation by its definition. Conventions it shares with fastkd (documented there):
ties at the top-k boundary go to the lower column; a row whose a or b values are all equal has ρ = 0
(loss 1, no gradient); -inf entries take the lowest ranks (tied among themselves) and no gradient;
at kinks (adjacent PAV blocks with equal means) blocks merge.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.oracle import _reduce, oracle_kd_loss, valid_tokens


def top_k_columns(row: list[float], k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]


def pav_decreasing(y: list[Tensor]) -> list[Tensor]:
    """Isotonic regression v_1 ≥ v_2 ≥ ... by pool-adjacent-violators (merge while not decreasing)."""
    blocks: list[list[Tensor]] = []
    for value in y:
        blocks.append([value])
        while len(blocks) > 1 and torch.stack(blocks[-2]).mean() <= torch.stack(blocks[-1]).mean():
            last = blocks.pop()
            blocks[-1] = blocks[-1] + last
    return [torch.stack(block).mean() for block in blocks for _ in block]


def soft_rank(theta: Tensor) -> Tensor:
    """Ascending l2 soft ranks (strength 1): projection of θ onto the permutahedron of (1..n);
    -inf entries get the average of the lowest ranks and are left out of the projection."""
    n = theta.shape[0]
    finite = [j for j in range(n) if torch.isfinite(theta[j])]
    low = n - len(finite)
    ranks = [theta.new_tensor((low + 1) / 2.0)] * n
    order = sorted(finite, key=lambda j: -theta[j].item())
    s = [theta[j] for j in order]
    y = [s[i] - float(n - i) for i in range(len(s))]
    v = pav_decreasing(y)
    for i, j in enumerate(order):
        ranks[j] = s[i] - v[i]
    return torch.stack(ranks)


def pearson(x: Tensor, y: Tensor) -> Tensor:
    cx, cy = x - x.mean(), y - y.mean()
    return (cx * cy).sum() / (cx.norm() * cy.norm())


def _constant(z: Tensor, value: float) -> Tensor:
    """``value``, connected to z's graph with zero gradient (z may hold -inf)."""
    return z.nan_to_num(0.0, 0.0, 0.0).sum() * 0.0 + value


def ranking_row(z: Tensor, u: Tensor, k: int) -> Tensor:
    columns = sorted(set(top_k_columns(u.tolist(), k)) | set(top_k_columns(z.tolist(), k)))
    a, b = u[columns], z[columns]
    if bool((a == a[0]).all()) or bool((b == b[0]).all()):
        return _constant(z, 1.0)
    return 1.0 - pearson(soft_rank(a), soft_rank(b))


def oracle_ranking_loss(
    student: Tensor,
    teacher: Tensor,
    k: int = 5,
    *,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """fp64 ranking loss 1 − ρ per valid token, reduced; gradient w.r.t. ``student`` by autograd."""
    lead, vocab = student.shape[:-1], student.shape[-1]
    valid = valid_tokens(lead, student.device, labels, mask, ignore_index)
    z = student.to(torch.float64).reshape(-1, vocab)
    u = teacher.detach().to(torch.float64).reshape(-1, vocab)
    rows = [ranking_row(z[n], u[n], k) if valid[n] else _constant(z[n], 0.0) for n in range(z.shape[0])]
    loss = torch.stack(rows) if rows else z.sum(-1)
    return _reduce(loss, valid, lead, reduction, num_items_in_batch)


def oracle_rlkd(
    student: Tensor, teacher: Tensor, k: int = 5, divergence: str = "forward_kl", **options: object
) -> Tensor:
    """ranking + divergence / 2, the divergence from the core oracle (tests/oracle.py)."""
    keys = ("labels", "mask", "ignore_index", "reduction", "num_items_in_batch")
    rank_options = {key: options[key] for key in keys if key in options}
    rank = oracle_ranking_loss(student, teacher, k, **rank_options)
    return rank + 0.5 * oracle_kd_loss(student, teacher, divergence, **options)
