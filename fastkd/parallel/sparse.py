"""Vocabulary-parallel sparse (top-k) teacher KL: the student's logits are split over the ranks, the
teacher's k (global index, log-probability) slots are the same on every rank.

With b = z/T on this rank's slice, the tempered teacher buckets p̃ (the k slots, plus the rest bucket
without renormalisation; computed from the replicated cache on every rank, no communication) and the
global log-sum-exps L (all of b) and R (b outside the support, rest bucket only):

    ℓ = Σ_k p̃_k (log p̃_k + L) − Σ_r Σ_{k on rank r} p̃_k b_k + p̃_rest (log p̃_rest − R + L)

so the only sliced sum is Σ p̃_k b_k over the slots this rank holds. Gradient on the slice:
(q_j − p̃_j)/T on support columns, (q_j − p̃_rest·e^{b_j − R})/T elsewhere (no rest term without a
rest bucket). Communication: two all-reduces of 2 fp32 per row (the log-sum-exps) and one of 1 fp32
per row (the loss). The local work is PyTorch on the slice (the Triton sparse kernel has no sliced
entry yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.parallel import ShardLayout
from fastkd.boundary.sparse import SparseInputs, SparseOptions, has_rest_bucket
from fastkd.parallel.comm import all_reduce_sum_, global_logsumexp_

NEG_INF = float("-inf")


def _buckets(flat: SparseInputs, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tempered teacher log-probs of the slots [N, k] and of the rest [N]; whether the row has mass."""
    a = flat.logprobs.to(torch.float32) / temperature
    a_rest = flat.rest.to(torch.float32) / temperature
    lse_t = torch.logaddexp(a.logsumexp(-1), a_rest)
    has_mass = lse_t > NEG_INF
    safe = lse_t.masked_fill(~has_mass, 0.0)
    return a - safe[:, None], a_rest - safe, has_mass


def _entropy_terms(lp: torch.Tensor) -> torch.Tensor:
    """Σ p log p and Σ p over the last dimension (0·log 0 = 0)."""
    p = lp.exp()
    return torch.where(p > 0, p * lp, 0.0).sum(-1), p.sum(-1)


@dataclass(frozen=True)
class SparseShardCall:
    """A vocabulary-parallel sparse-KL call: flattened inputs (student slice [N, V_r], global indices
    [N, k]), options, layout, group."""

    flat: SparseInputs
    options: SparseOptions
    layout: ShardLayout
    group: dist.ProcessGroup | None

    def reduce(self, loss_rows: torch.Tensor) -> torch.Tensor:
        return reduce_rows(loss_rows, self.flat.leading_shape, self.flat.divisor, self.options.reduction)

    def loss_rows(self, student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Global per-row losses [N] on every rank; writes the slice's scaled gradient into ``grad``."""
        flat, t, vocab = self.flat, self.options.temperature, student.shape[-1]
        rest = has_rest_bucket(self.options.renormalize, flat.indices.shape[1], self.layout.vocab)
        local = flat.indices - self.layout.offset
        owned = (local >= 0) & (local < vocab)
        index = local.clamp(0, vocab - 1)
        b = student.to(torch.float32) / t
        support = torch.zeros_like(b).scatter_add_(-1, index, owned.to(b.dtype)) > 0
        lse = torch.stack([b.logsumexp(-1), b.masked_fill(support, NEG_INF).logsumexp(-1)], -1)
        lse_all, lse_rest = global_logsumexp_(lse, self.group).unbind(-1)
        lp, lp_rest, has_mass = _buckets(flat, t)
        p = lp.exp()
        picked = torch.where(owned & (p > 0), p * b.gather(-1, index), 0.0).sum(-1)
        loss = all_reduce_sum_(-picked, self.group)
        plogp, mass = _entropy_terms(lp)
        loss = loss + plogp + mass * lse_all
        g = (b - lse_all[:, None]).exp()
        if rest:
            p_rest = lp_rest.exp()
            tail = torch.where(p_rest > 0, p_rest * (lp_rest - lse_rest + lse_all), 0.0)
            loss = loss + tail
            g = g - torch.where(support, 0.0, p_rest[:, None] * (b - lse_rest[:, None]).exp())
        g = g.scatter_add(-1, index, torch.where(owned, -p, 0.0))
        keep = flat.valid & has_mass
        grad.copy_(torch.where(keep[:, None], g * (flat.divisor.reciprocal() / t), 0.0))
        return torch.where(keep, loss, 0.0)
