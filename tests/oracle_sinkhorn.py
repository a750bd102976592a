"""fp64 oracle for SinKD (arXiv 2402.17110), written from shared/spec/losses.md ("SinKD").

Independent of fastkd: plain float64 loops, the unrolled Sinkhorn rounds, autograd for the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _softmax(x: Tensor) -> Tensor:
    top = x.max(-1, keepdim=True).values
    e = torch.exp(x - top)
    return e / e.sum(-1, keepdim=True)


def oracle_sinkhorn(
    student: Tensor,
    teacher: Tensor,
    valid: Tensor | None = None,
    *,
    tau: float = 2.0,
    epsilon: float = 0.1,
    n_iters: int = 20,
    scale: float = 1e-3,
) -> Tensor:
    """S = scale·Σ Π⊙W over the valid rows; ``student`` [..., V] fp64 (may require grad)."""
    vocab = student.shape[-1]
    z = student.reshape(-1, vocab)
    u = teacher.detach().reshape(-1, vocab)
    if valid is not None:
        keep = [i for i, ok in enumerate(valid.reshape(-1).tolist()) if ok]
        z, u = z[keep], u[keep]
    q = _softmax(z / tau)
    p = _softmax(u / tau)
    if q.shape[0] == 0:
        return (z.sum() * 0.0).reshape(())
    step = max(1, (1 << 22) // (q.shape[0] * vocab))  # W row blocks of at most 4M fp64 differences
    w = torch.cat([(q[i : i + step, None, :] - p[None]).abs().sum(-1) for i in range(0, q.shape[0], step)])
    k = torch.exp(-w / epsilon)
    for _ in range(n_iters):
        k = k / k.sum(1, keepdim=True)
        k = k / k.sum(0, keepdim=True)
    return scale * (k * w).sum()


def oracle_sinkd_objective(
    student: Tensor, teacher: Tensor, labels: Tensor, *, alpha: float, temperature: float,
    sinkhorn_weight: float = 0.8, ignore_index: int = -100, **sinkhorn: float,
) -> Tensor:  # fmt: skip
    """α·mean(−Σ p_T log q_T) + (1 − α)·mean CE + weight·S over rows whose label is not ignored."""
    valid = labels != ignore_index
    z, u, y = student[valid], teacher.detach()[valid], labels[valid]
    n = max(int(valid.sum()), 1)
    log_q = torch.log(_softmax(z / temperature))
    kd = -(_softmax(u / temperature) * log_q).sum() / n
    ce = -torch.log(_softmax(z)).gather(1, y[:, None]).sum() / n
    return (
        alpha * kd + (1 - alpha) * ce + sinkhorn_weight * oracle_sinkhorn(student, teacher, valid, **sinkhorn)
    )
