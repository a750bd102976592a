"""The Sinkhorn iterations of SinKD on the B×B cost, forward and backward, in batched PyTorch ops.

The plan is B×B (B = batch rows) and each half-iteration is one matrix-vector product or
log-sum-exp: O(n_iters·B²) work, microseconds against the O(B²·V) cost kernel, so a fused kernel
would save only launches (torch.compile or CUDA graphs can remove those). Every iterate has the form
diag(a)·K·diag(b), K = exp(−W/ε) (log domain: exp(−W/ε + f_i + g_j)), so the forward keeps only the
scaling vectors of each half-iteration (2·n_iters·B numbers, never n_iters copies of the plan) and the
backward rebuilds each iterate from W and them.

Backward (exactly autograd of the unrolled iterations, written on the log of the iterates): with
A = dS/dlog X_n = scale·X_n⊙W, undo each round t = n..1: the column normalisation
X_t = Y_t / colsum(Y_t) gives A ← A − X_t⊙colsum(A); the row normalisation Y_t = X_{t−1}/rowsum gives
A ← A − Y_t⊙rowsum(A). Then dS/dW = scale·X_n − A/ε.

Invalid rows (masks) are dropped from the support without a host synchronisation: their rows and
columns of K are 0 (−inf in the log domain) and their scaling factors 0, which leaves the valid block
exactly the smaller problem.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Scalings(NamedTuple):
    """Per half-iteration scaling vectors, [n_iters, B] each: a (rows) and b (columns), or their logs."""

    rows: torch.Tensor
    cols: torch.Tensor


def _kernel(w: torch.Tensor, valid: torch.Tensor, epsilon: float, log_domain: bool) -> torch.Tensor:
    pair = valid[:, None] & valid[None, :]
    if log_domain:
        return torch.where(pair, -w / epsilon, float("-inf"))
    return torch.where(pair, torch.exp(-w / epsilon), 0.0)


def _normalisers(k: torch.Tensor, other: torch.Tensor, valid: torch.Tensor, log_domain: bool) -> torch.Tensor:
    """The next scaling vector for the rows of ``k`` given the other side's vector ``other``."""
    if log_domain:
        return torch.where(valid, -torch.logsumexp(k + other[None, :], dim=1), 0.0)
    sums = k @ other
    return torch.where(sums > 0, 1.0 / sums, 0.0)


def _plan(k: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, log_domain: bool) -> torch.Tensor:
    if log_domain:
        return torch.exp(k + rows[:, None] + cols[None, :])
    return rows[:, None] * k * cols[None, :]


def plan_forward(
    w: torch.Tensor, valid: torch.Tensor, epsilon: float, n_iters: int, log_domain: bool
) -> tuple[torch.Tensor, Scalings]:
    """(Π, scalings): the plan after ``n_iters`` rounds of row- then column-normalisation of
    exp(−W/ε) restricted to valid rows and columns, and the scaling vectors of every round."""
    k = _kernel(w, valid, epsilon, log_domain)
    kt = k.t()
    ones = valid.to(w.dtype)
    col = torch.zeros_like(ones) if log_domain else ones
    rows, cols = [], []
    for _ in range(n_iters):
        row = _normalisers(k, col, valid, log_domain)
        col = _normalisers(kt, row, valid, log_domain)
        rows.append(row)
        cols.append(col)
    scalings = Scalings(torch.stack(rows), torch.stack(cols))
    return _plan(k, row, col, log_domain), scalings


def plan_backward(
    w: torch.Tensor,
    valid: torch.Tensor,
    epsilon: float,
    log_domain: bool,
    scalings: Scalings,
    weight: torch.Tensor,
) -> torch.Tensor:
    """G = dS/dW for S = weight·Σ Π⊙W (``weight`` = scale·grad_output), recomputing the iterates."""
    k = _kernel(w, valid, epsilon, log_domain)
    rows, cols = scalings
    n_iters = rows.shape[0]
    first_cols = torch.zeros_like(cols[0]) if log_domain else valid.to(w.dtype)
    plan = _plan(k, rows[-1], cols[-1], log_domain)
    direct = weight * plan
    a = direct * torch.where(valid[:, None] & valid[None, :], w, 0.0)
    for t in range(n_iters - 1, -1, -1):
        a = a - _plan(k, rows[t], cols[t], log_domain) * a.sum(0, keepdim=True)
        before = cols[t - 1] if t > 0 else first_cols
        a = a - _plan(k, rows[t], before, log_domain) * a.sum(1, keepdim=True)
    return direct - a / epsilon
