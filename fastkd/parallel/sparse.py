"""Vocabulary-parallel sparse (top-k) teacher KL: the student's logits are split over the ranks, the
teacher's k (global index, log-probability) slots are the same on every rank.

With b = z/T on this rank's slice, the tempered teacher buckets p̃ (the k slots, plus the rest bucket
without renormalisation; computed from the replicated cache on every rank, no communication) and the
global log-sum-exps L (all of b) and R (b outside the support, rest bucket only):

    ℓ = Σ_k p̃_k (log p̃_k + L) − Σ_r Σ_{k on rank r} p̃_k b_k + p̃_rest (log p̃_rest − R + L)

so the only sliced sum is Σ p̃_k b_k over the slots this rank holds. Gradient on the slice:
(q_j − p̃_j)/T on support columns, (q_j − p̃_rest·e^{b_j − R})/T elsewhere (no rest term without a
rest bucket). Communication: two all-reduces of 2 fp32 per row (the log-sum-exps) and one of 1 fp32
per row (the loss). The local work: the sparse kernel's sliced entry (STATS, GRAD phases), Triton on
CUDA and C++ on CPU, or PyTorch on the slice (``backend="torch"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastkd.boundary.inputs import reduce_rows
from fastkd.boundary.parallel import GRAD, STATS, ShardLayout
from fastkd.boundary.sparse import SparseInputs, SparseOptions, has_rest_bucket
from fastkd.ops.shard import sparse_kl_shard_cpu, sparse_kl_shard_fwd
from fastkd.parallel.comm import all_reduce_sum_, global_logsumexp_

NEG_INF = float("-inf")


def _buckets(
    logprobs: torch.Tensor, rest: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tempered teacher log-probs of the slots [N, k] and of the rest [N]; whether the row has mass."""
    a = logprobs.to(torch.float32) / temperature
    a_rest = rest.to(torch.float32) / temperature
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
    [N, k]), options, layout, group, and the backend of the local work ("triton", "cpu" or "torch")."""

    flat: SparseInputs
    options: SparseOptions
    layout: ShardLayout
    group: dist.ProcessGroup | None
    backend: str = "torch"

    def reduce(self, loss_rows: torch.Tensor) -> torch.Tensor:
        return reduce_rows(loss_rows, self.flat.leading_shape, self.flat.divisor, self.options.reduction)

    def loss_rows(self, student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Global per-row losses [N] on every rank; writes the slice's scaled gradient into ``grad``."""
        flat, t = self.flat, self.options.temperature
        rest = has_rest_bucket(self.options.renormalize, flat.indices.shape[1], self.layout.vocab)
        indices, logprobs = flat.indices, flat.logprobs.to(torch.float32)
        if rest:  # the kernel walks each row's support in ascending order
            indices, order = indices.sort(dim=-1)
            logprobs = logprobs.gather(-1, order)
        slots = _Slots(indices - self.layout.offset, logprobs, rest)
        lp, lp_rest, has_mass = _buckets(logprobs, flat.rest, t)
        keep = flat.valid & has_mass
        local = _torch_slice if self.backend == "torch" else _fused_slice
        picked = local(self, student, grad, slots, (lp, lp_rest, keep))
        loss = all_reduce_sum_(-picked, self.group)
        plogp, mass = _entropy_terms(lp)
        lse_all, lse_rest = slots.lse.unbind(-1)
        loss = loss + plogp + mass * lse_all
        if rest:
            p_rest = lp_rest.exp()
            loss = loss + torch.where(p_rest > 0, p_rest * (lp_rest - lse_rest + lse_all), 0.0)
        return torch.where(keep, loss, 0.0)


@dataclass
class _Slots:
    """The teacher's slots as this slice sees them: slice-local ids, fp32 log-probs at T = 1, whether
    a rest bucket exists; ``lse`` [N, 2] receives the global log-sum-exps (all of b; b off the support)."""

    local: torch.Tensor
    logprobs: torch.Tensor
    rest: bool
    lse: torch.Tensor | None = None


def _torch_slice(call: SparseShardCall, student: torch.Tensor, grad: torch.Tensor, slots: _Slots, teacher):
    """PyTorch local work: the global log-sum-exps (two all-reduces), the slice's gradient into
    ``grad``; returns Σ p̃_k b_k over the slots the slice holds."""
    lp, lp_rest, keep = teacher
    t, vocab = call.options.temperature, student.shape[-1]
    owned = (slots.local >= 0) & (slots.local < vocab)
    index = slots.local.clamp(0, vocab - 1)
    b = student.to(torch.float32) / t
    support = torch.zeros_like(b).scatter_add_(-1, index, owned.to(b.dtype)) > 0
    lse = torch.stack([b.logsumexp(-1), b.masked_fill(support, NEG_INF).logsumexp(-1)], -1)
    slots.lse = global_logsumexp_(lse, call.group)
    lse_all, lse_rest = slots.lse.unbind(-1)
    p = lp.exp()
    g = (b - lse_all[:, None]).exp()
    if slots.rest:
        g = g - torch.where(support, 0.0, lp_rest.exp()[:, None] * (b - lse_rest[:, None]).exp())
    g = g.scatter_add(-1, index, torch.where(owned, -p, 0.0))
    grad.copy_(torch.where(keep[:, None], g * (call.flat.divisor.reciprocal() / t), 0.0))
    return torch.where(owned & (p > 0), p * b.gather(-1, index), 0.0).sum(-1)


def _fused_slice(call: SparseShardCall, student: torch.Tensor, grad: torch.Tensor, slots: _Slots, teacher):
    """The fused kernel's STATS and GRAD phases (Triton, or C++ for "cpu") around the two all-reduces
    (same contract as :func:`_torch_slice`)."""
    op = sparse_kl_shard_cpu if call.backend == "cpu" else sparse_kl_shard_fwd
    flat, t = call.flat, call.options.temperature
    stats = torch.zeros(student.shape[0], 4, dtype=torch.float32, device=student.device)
    args = (student, slots.local.contiguous(), slots.logprobs.contiguous(), flat.rest, flat.valid)
    scale = flat.divisor.reciprocal()
    op(*args, scale, grad, stats, slots.rest, t, STATS)
    slots.lse = global_logsumexp_(stats[:, :2].contiguous(), call.group)
    stats[:, :2] = slots.lse
    return -op(*args, scale, grad, stats, slots.rest, t, GRAD)
