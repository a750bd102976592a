"""Soft ranks (Blondel et al. 2020, arXiv 2002.08871, l2 regularisation) and the rank correlation of RLKD.

Batched over rows of a small [N, m] tensor whose valid slots are given by a bool mask (the ≤ 2k union of
top-k indices per token). With ε = 1 (the torchsort default), the soft rank of θ is the Euclidean
projection of θ/ε onto the permutahedron of w = (n, n−1, ..., 1), n = the row's number of valid slots:

    s = θ sorted descending (permutation σ),  v = argmin_{v_1 ≥ ... ≥ v_n} ½‖v − (s − w)‖²,
    r = (s − v) put back in θ's order,

so ranks are ascending (the largest θ gets rank ≈ n), as ``torchsort.soft_rank`` gives. The isotonic
regression v is piecewise constant: v equals the mean of y = s − w over blocks of consecutive
positions. Here it is computed by the min-max formula v_i = min_{j ≤ i} max_{l ≥ i} mean(y_j..y_l)
(O(m²) per row, no data-dependent loop, so it batches without host synchronisation), in fp64 (the
arrays are tiny next to the [N, V] logits, and fp64 makes the block structure exact for practical
inputs). Blocks are the maximal runs of equal v (the coarsest partition: at a kink, where adjacent
blocks have equal means, the gradient is that of the merged block).

Jacobian: ∂v/∂s averages within blocks, so ∂r/∂θ = (I − B)/ε with B the block-averaging matrix, and the
vector-Jacobian product is g ↦ g − blockmean(g). ``-inf`` entries rank below every finite one (they are
replaced by min(finite) − n − 1, which no block merges across) and get no gradient.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _finite_values(theta: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """θ in fp64 with -inf replaced by a value n + 1 below the row's smallest finite one; 0 off-slot."""
    theta = theta.detach().to(torch.float64).masked_fill(~slot, 0.0)
    finite = slot & torch.isfinite(theta)
    low = theta.masked_fill(~finite, float("inf")).amin(-1, keepdim=True)
    low = torch.where(torch.isfinite(low), low, 0.0) - slot.sum(-1, keepdim=True) - 1.0
    return torch.where(slot & ~finite, low, theta)


def _isotonic_decreasing(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """argmin over v_1 ≥ ... ≥ v_n of ‖v − y‖², valid slots first in each row: min-max formula."""
    m = y.shape[-1]
    pos = torch.arange(m, device=y.device)
    prefix = torch.nn.functional.pad(y.masked_fill(~slot, 0.0).cumsum(-1), (1, 0))
    length = (pos[None, :] - pos[:, None] + 1).to(y.dtype)  # [j, l]
    means = (prefix[:, None, 1:] - prefix[:, :-1, None]) / length.clamp_min(1.0)
    means = means.masked_fill((length < 1) | ~slot[:, None, :], NEG_INF)
    upper = means.flip(-1).cummax(-1).values.flip(-1)  # [N, j, i]: max over l ≥ i
    upper = upper.masked_fill(pos[:, None] > pos[None, :], float("inf"))
    return upper.amin(1).masked_fill(~slot, 0.0)


def soft_rank_blocks(theta: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft ranks [N, m] (fp64, 0 off-slot) and the same-block matrix [N, m, m] (bool, θ's order)."""
    values = _finite_values(theta, slot)
    count = slot.sum(-1, keepdim=True)
    key = values.masked_fill(~slot, NEG_INF)
    s, perm = key.sort(dim=-1, descending=True, stable=True)
    s_slot = slot.gather(-1, perm)
    s = torch.where(s_slot, s - s[:, :1], 0.0)  # ranks do not change when θ shifts
    w = (count - torch.arange(s.shape[-1], device=s.device)).to(s.dtype)
    y = torch.where(s_slot, s - w, 0.0)
    v = _isotonic_decreasing(y, s_slot)
    tol = 64 * torch.finfo(torch.float64).eps * s.shape[-1] * (1.0 + y.abs().amax(-1, keepdim=True))
    start = torch.nn.functional.pad((v[:, :-1] - v[:, 1:]) > tol, (1, 0), value=True)
    block = torch.empty_like(perm).scatter_(-1, perm, start.cumsum(-1))
    same = (block[:, :, None] == block[:, None, :]) & slot[:, :, None] & slot[:, None, :]
    y_orig = torch.empty_like(y).scatter_(-1, perm, y)
    s_orig = torch.empty_like(s).scatter_(-1, perm, s)
    ranks = torch.where(slot, s_orig - block_mean(y_orig, same), 0.0)
    return ranks, same


def block_mean(g: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Mean of g over each slot's block (0 off-slot)."""
    sizes = same.sum(-1).clamp_min(1).to(g.dtype)
    return (same.to(g.dtype) @ g.unsqueeze(-1)).squeeze(-1) / sizes


def soft_rank_vjp(
    g: torch.Tensor, same: torch.Tensor, theta: torch.Tensor, slot: torch.Tensor
) -> torch.Tensor:
    """gᵀ ∂r/∂θ = g − blockmean(g) on finite valid slots, 0 elsewhere."""
    keep = slot & torch.isfinite(theta)
    return torch.where(keep, g - block_mean(g, same), 0.0)


class SoftRank(torch.autograd.Function):
    """r = soft_rank(θ) over the valid slots of each row, with the block-averaging Jacobian."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, theta: torch.Tensor, slot: torch.Tensor
    ) -> torch.Tensor:
        ranks, same = soft_rank_blocks(theta, slot)
        ctx.save_for_backward(same, theta, slot)
        return ranks.to(theta.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
        same, theta, slot = ctx.saved_tensors
        return soft_rank_vjp(grad.to(torch.float64), same, theta, slot).to(theta.dtype), None


def soft_rank(theta: torch.Tensor, slot: torch.Tensor | None = None) -> torch.Tensor:
    """Ascending l2 soft ranks (strength 1) of each row of θ [N, m] over the slots where ``slot`` holds."""
    if slot is None:
        slot = torch.ones_like(theta, dtype=torch.bool)
    return SoftRank.apply(theta, slot)


def tied_rows(x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Rows whose valid values are all equal (their soft ranks have zero variance), -inf included."""
    hi = x.masked_fill(~slot, NEG_INF).amax(-1)
    lo = x.masked_fill(~slot, float("inf")).amin(-1)
    return (hi == lo) | (slot.sum(-1) < 2)


def _centred_unit(r: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = r.sum(-1, keepdim=True) / slot.sum(-1, keepdim=True).clamp_min(1)
    centred = torch.where(slot, r - mean, 0.0)
    norm = centred.norm(dim=-1, keepdim=True)
    return centred / torch.where(norm > 0, norm, 1.0), norm


def rank_loss_and_grad(
    a: torch.Tensor, b: torch.Tensor, slot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row 1 − ρ(soft_rank(a), soft_rank(b)) (fp64 [N]) and its gradient wrt b (fp64 [N, m]).

    ∂ρ/∂r_b = (â − ρ·b̂)/‖c_b‖ with â, b̂ the centred, unit-norm ranks (centring is absorbed because â
    and b̂ have zero mean). Rows where a or b is all tied (zero rank variance) get ρ := 0, gradient 0.
    """
    r_a, _ = soft_rank_blocks(a, slot)
    r_b, same_b = soft_rank_blocks(b, slot)
    unit_a, norm_a = _centred_unit(r_a, slot)
    unit_b, norm_b = _centred_unit(r_b, slot)
    degenerate = tied_rows(a, slot) | tied_rows(b, slot) | (norm_a * norm_b == 0).squeeze(-1)
    rho = torch.where(degenerate, 0.0, (unit_a * unit_b).sum(-1))
    grad_r = -(unit_a - rho[:, None] * unit_b) / torch.where(norm_b > 0, norm_b, 1.0)
    grad = soft_rank_vjp(grad_r, same_b, b, slot).masked_fill(degenerate[:, None], 0.0)
    return 1.0 - rho, grad


def rank_loss(a: torch.Tensor, b: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """The same per-row loss through autograd (``SoftRank``): the ``torch`` backend's formulation."""
    r_a = soft_rank(a.detach().to(torch.float64), slot)
    r_b = soft_rank(b.to(torch.float64), slot)
    unit_a, norm_a = _centred_unit(r_a, slot)
    unit_b, norm_b = _centred_unit(r_b, slot)
    zero_norm = (norm_a * norm_b == 0).squeeze(-1).detach()
    degenerate = tied_rows(a, slot) | tied_rows(b.detach(), slot) | zero_norm
    rho = torch.where(degenerate, 0.0, (unit_a * unit_b).sum(-1))
    return 1.0 - rho
