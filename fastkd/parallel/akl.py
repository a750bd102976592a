"""Vocabulary-parallel AKL (Wu et al. 2024, arXiv 2404.02657): the head/tail threshold over slices.

AKL's head is a prefix of the teacher's tokens in stable descending order (a = u/T, ties in index
order) whose cumulative mass stays ≤ μ, plus the top-1 token. The single-process Triton kernel finds
it with a 16-ary search over the ordered bit patterns of a; here every round of that search
all-reduces the 16 candidate masses of each row, so no rank ever needs another's logits:

- the global log-sum-exps (two all-reduces of 3 fp32 per row), the row maximum of a and the rank
  holding its first occurrence (one all-reduce each, the top-1 token);
- about eight rounds of the search (one all-reduce of 16 fp32 per row each; the bounds are the same
  on every rank, so every rank runs the same rounds);
- one all-gather of each rank's count of tokens at the tie level (their index order over the ranks);
- one all-reduce of the four row sums (forward KL, reverse KL, head gap, tail gap) and the loss.

The local work is PyTorch on the slice (the fused kernels keep their single-process search).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from fastkd.parallel.comm import all_reduce_sum_, global_logsumexp_
from fastkd.reference.shard import hard_label_grad

if TYPE_CHECKING:
    from fastkd.parallel.divergence import ShardCall

WAYS = 16
# Elements of one [rows, V_r, WAYS] comparison block of the search.
SEARCH_ELEMENTS = 1 << 22


def ordered_key(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> int64 such that integer order equals float order (the kernel's mapping)."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)


def key_value(key: torch.Tensor) -> torch.Tensor:
    """The fp32 value of an ordered key (inverse of :func:`ordered_key`)."""
    bits = key.to(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).view(torch.float32)


def _masses(key: torch.Tensor, p: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Σ_i p_i·[key_i ≥ cand_w] per row and candidate, [N, WAYS], in row blocks."""
    rows = max(1, SEARCH_ELEMENTS // max(1, key.shape[1] * WAYS))
    parts = [
        torch.where(k[:, :, None] >= c[:, None, :], q[:, :, None], 0.0).sum(1)
        for k, q, c in zip(key.split(rows), p.split(rows), cand.split(rows), strict=True)
    ]
    return torch.cat(parts) if parts else p.new_zeros(0, WAYS)


def head_threshold(
    key: torch.Tensor, p: torch.Tensor, best: torch.Tensor, mu: float, group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(smallest key x with F(x) = Σ_{key ≥ x} p ≤ μ over all ranks, F(x)) per row."""
    lo = ordered_key(torch.full_like(best, float("-inf"))) - 1
    hi = ordered_key(best) + 1
    mass_hi = torch.zeros_like(best)
    ways = torch.arange(1, WAYS + 1, device=key.device)
    while bool((hi - lo > 1).any()):
        cand = torch.maximum(lo[:, None] + (hi - lo)[:, None] * ways // (WAYS + 1), lo[:, None] + 1)
        mass = all_reduce_sum_(_masses(key, p, cand), group)
        fits = mass <= mu
        lo = torch.where(fits, lo[:, None], cand).amax(1).maximum(lo)
        mass_hi = torch.where(fits, mass, mass_hi[:, None]).amax(1).maximum(mass_hi)
        hi = torch.where(fits, cand, hi[:, None]).amin(1).minimum(hi)
    return hi, mass_hi


def _top1(
    a: torch.Tensor, best: torch.Tensor, rank: int, world: int, group: dist.ProcessGroup | None
) -> torch.Tensor:
    """Bool [N, V_r]: the first column of the global row maximum (on the lowest rank holding it)."""
    local_best, first = a.max(-1)
    owner = torch.where(local_best == best, rank, world)
    dist.all_reduce(owner, op=dist.ReduceOp.MIN, group=group)
    cols = torch.arange(a.shape[1], device=a.device)
    return (cols[None, :] == first[:, None]) & (owner == rank)[:, None]


def _head(a: torch.Tensor, p: torch.Tensor, lse_a: torch.Tensor, mu: float, call: ShardCall) -> torch.Tensor:
    """Bool [N, V_r]: the slice's head tokens."""
    rank, world = call.layout.rank, len(call.layout.sizes)
    best = a.amax(-1)
    dist.all_reduce(best, op=dist.ReduceOp.MAX, group=call.group)
    key = ordered_key(a)
    head_key, head_mass = head_threshold(key, p, best, mu, call.group)
    tie = key == (head_key - 1)[:, None]
    counts = [torch.empty_like(head_key) for _ in range(world)]
    dist.all_gather(counts, tie.sum(-1), group=call.group)
    before = torch.stack(counts)[:rank].sum(0) if rank else torch.zeros_like(head_key)
    tie_rank = before[:, None] + tie.cumsum(-1)
    tie_p = (key_value(head_key - 1) - lse_a).exp()
    fits = head_mass[:, None] + tie_rank * tie_p[:, None] <= mu
    return (key >= head_key[:, None]) | _top1(a, best, rank, world, call.group) | (tie & fits)


def akl_loss_rows(call: ShardCall, student: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Global AKL loss rows [N] on every rank (hard-label term included); writes the slice's scaled
    gradient w_H·(q − p) + w_T·(q·(log q − log p) − q·KL(q‖p)), over T, into ``grad``."""
    o, flat = call.options, call.flat
    z = student.to(torch.float32)
    a, b = flat.teacher.to(torch.float32) / o.temperature, z / o.temperature
    lse = global_logsumexp_(torch.stack([a.logsumexp(-1), b.logsumexp(-1), z.logsumexp(-1)], -1), call.group)
    lp, lq = a - lse[:, :1], b - lse[:, 1:2]
    p, q = lp.exp(), lq.exp()
    head = _head(a, p, lse[:, 0], o.param, call)
    forward = torch.where(p > 0, p * (lp - lq), 0.0)
    reverse = torch.where(q > 0, q * (lq - lp), 0.0)
    gap = (p - q).abs()
    w = o.hard_label_weight
    label_part = torch.zeros_like(lse[:, 0]) if call.labels is None else _picked(z, call.labels)
    sums = torch.stack(
        [forward.sum(-1), reverse.sum(-1), (gap * head).sum(-1), (gap * ~head).sum(-1), label_part], -1
    )
    fkl, rkl, g_head, g_tail, z_label = all_reduce_sum_(sums, call.group).unbind(-1)
    total = (g_head + g_tail).clamp_min(1e-8)
    w_head, w_tail = (g_head / total)[:, None], (g_tail / total)[:, None]
    out = (w_head * (q - p) + w_tail * (reverse - q * rkl[:, None])) / o.temperature
    loss = w_head[:, 0] * fkl + w_tail[:, 0] * rkl
    if w > 0:
        out = (1.0 - w) * out + w * hard_label_grad(z, lse[:, 2], call.labels)
        loss = (1.0 - w) * loss + w * (lse[:, 2] - z_label)
    valid = flat.valid
    grad.copy_(torch.where(valid[:, None], out * flat.divisor.reciprocal(), 0.0))
    return torch.where(valid, loss, 0.0)


def _picked(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    here = (labels >= 0) & (labels < z.shape[-1])
    return torch.where(here, z.gather(-1, labels.clamp(0, z.shape[-1] - 1)[:, None])[:, 0], 0.0)
