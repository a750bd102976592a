"""fp64 oracle of the sparse (top-k) teacher KL, written from ``shared/spec/losses.md`` ("Sparse (top-k)
teacher") and the documented temperature rule. Imports nothing from ``fastkd``; plain float64 code.

Per token: support S (k indices), teacher probabilities p_k = exp(l_k) at T = 1, student
q = softmax(z/T) over the full vocabulary (the gradient flows through it).
- renormalize: buckets = the k slots with weights p_k^{1/T}, normalised.
- otherwise: one more bucket, the rest, with teacher mass max(0, 1 − Σ p_k) (0 when S is the whole
  vocabulary) and student mass Σ_{j∉S} q_j (summed directly over the complement); teacher weights
  p^{1/T} over the k + 1 buckets, normalised.
ℓ = Σ_buckets w (log w − log q_bucket), 0·log 0 = 0; a teacher with no mass at all gives ℓ = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.oracle import NEG_INF, _reduce, valid_tokens


def _row_loss(z: Tensor, idx: Tensor, lp: Tensor, renormalize: bool, temperature: float) -> Tensor:
    """One token, in the log domain throughout (fp64 underflows at logit gaps of ~750)."""
    lq = torch.log_softmax(z / temperature, dim=-1)
    in_support = torch.zeros_like(z, dtype=torch.bool)
    in_support[idx] = True
    teacher = [lp]
    student = [lq[idx]]
    if not renormalize and not bool(in_support.all()):
        rest = (1.0 - lp.exp().sum()).clamp_min(0.0)
        teacher.append(rest.log().reshape(1))
        student.append(torch.logsumexp(lq[~in_support], dim=0).reshape(1))
    lw, lqb = torch.cat(teacher) / temperature, torch.cat(student)
    if bool((lw == NEG_INF).all()):
        return z.new_zeros(())
    lw = lw - torch.logsumexp(lw, dim=0)
    terms = [
        lwi.exp() * (lwi - lqi) if lwi > NEG_INF else z.new_zeros(())
        for lwi, lqi in zip(lw, lqb, strict=True)
    ]
    return torch.stack(terms).sum()


def oracle_sparse_kl(
    student: Tensor,
    indices: Tensor,
    logprobs: Tensor,
    *,
    renormalize: bool = True,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """fp64 sparse-teacher KL; student [..., V], indices/logprobs [..., k]; grad w.r.t. student."""
    lead, vocab, k = student.shape[:-1], student.shape[-1], indices.shape[-1]
    valid = valid_tokens(lead, student.device, labels, mask, ignore_index)
    z = student.to(torch.float64).reshape(-1, vocab)
    idx = indices.reshape(-1, k).long()
    lp = logprobs.to(torch.float64).reshape(-1, k)
    rows = [
        _row_loss(z[n], idx[n], lp[n], renormalize, temperature) if valid[n] else z.new_zeros(())
        for n in range(z.shape[0])
    ]
    loss = torch.stack(rows) if rows else z.new_zeros(0)
    return _reduce(loss, valid, lead, reduction, num_items_in_batch)
