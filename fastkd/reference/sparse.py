"""Pure-PyTorch sparse (top-k) teacher KL: the ``torch`` backend and the benchmarks' baseline.

Formula in :func:`fastkd.losses.sparse_kl`; autograd supplies the gradient. Invalid tokens get a
harmless teacher (indices 0..k−1, uniform) and, when labels or a mask are given, a zero student row,
so their garbage never reaches a gradient; their loss is 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.sparse import SparseInputs, SparseOptions, has_rest_bucket
from fastkd.reference.divergence import _kl_terms, poison_rows

NEG_INF = float("-inf")


def _teacher_buckets(
    flat: SparseInputs, options: SparseOptions, keep: torch.Tensor, compute: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tempered teacher log-probs of the k slots and of the rest bucket: log p̃ ∝ log p / T."""
    uniform = torch.full_like(flat.logprobs, -math.log(flat.indices.shape[1]), dtype=compute)
    a = torch.where(keep, flat.logprobs.to(compute), uniform) / options.temperature
    a_rest = torch.where(flat.valid, flat.rest.to(compute), NEG_INF) / options.temperature
    lse_t = torch.logaddexp(torch.logsumexp(a, dim=-1), a_rest)
    lse_t = lse_t.masked_fill(lse_t == NEG_INF, 0.0)
    return a - lse_t[:, None], a_rest - lse_t


def sparse_kl_rows(flat: SparseInputs, options: SparseOptions) -> torch.Tensor:
    """Per-token loss [N] (fp32, or fp64 for fp64 inputs), 0 at invalid tokens."""
    compute = torch.float64 if flat.student.dtype == torch.float64 else torch.float32
    keep = flat.valid[:, None]
    k = flat.indices.shape[1]
    indices = torch.where(keep, flat.indices, torch.arange(k, device=keep.device))
    b = flat.student.to(compute)
    if not flat.all_valid:
        b = b.masked_fill(~keep, 0.0)
    if options.temperature != 1.0:
        b = b / options.temperature
    with torch.no_grad():
        bad = ~b.logsumexp(dim=-1).isfinite()  # NaN, +inf or all −inf: loss and gradient NaN
    raw = b
    b = torch.where(bad[:, None], 0.0, b)
    rest = has_rest_bucket(options.renormalize, k, flat.student.shape[1])
    if rest:  # log q_rest from a log-sum-exp over the columns outside the support, never 1 − Σ q_k
        b_support = b.gather(-1, indices)
        lse_rest = b.scatter(-1, indices, NEG_INF).logsumexp(dim=-1, keepdim=True)
        lse_all = torch.logaddexp(lse_rest, b_support.logsumexp(dim=-1, keepdim=True))
        lq = b_support - lse_all
    else:
        lq = F.log_softmax(b, dim=-1).gather(-1, indices)
    lp, lp_rest = _teacher_buckets(flat, options, keep, compute)
    loss = _kl_terms(lp, lq).sum(-1)
    if rest:
        loss = loss + _kl_terms(lp_rest[:, None], lse_rest - lse_all).squeeze(-1)
    return torch.where(flat.valid, poison_rows(loss, raw, bad), 0.0)


def sparse_kl_loss(flat: SparseInputs, options: SparseOptions) -> torch.Tensor:
    """The reduced sparse-teacher KL on validated, flattened inputs."""
    return reduce_rows(sparse_kl_rows(flat, options), flat.leading_shape, flat.divisor, options.reduction)
