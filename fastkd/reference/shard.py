"""Pure-PyTorch vocabulary-parallel phases: the ``torch`` backend of :mod:`fastkd.parallel`.

Same contract as the fused phases in :mod:`fastkd.ops.shard` (STATS, ROW_SUM, GRAD on one rank's
slice [N, V_r], statistics in ``stats`` fp32 [N, 4]). The gradient uses the identity behind every
fused kernel: with ℓ = Σ_j f(log p_j, log q_j) over the whole vocabulary and g = ∂ℓ/∂(log q) taken
with log q free, ∂ℓ/∂z_j = (g_j − q_j·Σ_i g_i)/T; autograd gives the slice's g, the collective the
sum. Works in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch

from fastkd.boundary.parallel import CONSTANT_ROW_SUM, ROW_SUM, STATS
from fastkd.reference.divergence import per_token_divergence
from fastkd.reference.taid import interpolated_logits


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _slice_terms(lp: torch.Tensor, lq: torch.Tensor, divergence: str, param: float) -> tuple:
    """The slice's loss terms per row and g = ∂(Σ terms)/∂(log q), log q taken as free."""
    with torch.enable_grad():
        lq = lq.detach().requires_grad_()
        terms = per_token_divergence(lp, lq, divergence, param)
        (g,) = torch.autograd.grad(terms.sum(), lq)
    return terms.detach(), g


def hard_label_grad(z: torch.Tensor, lse_z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """softmax(z) of the global row minus the one-hot of the slice-local label (none when out of range)."""
    here = (labels >= 0) & (labels < z.shape[-1])
    index = labels.clamp(0, z.shape[-1] - 1)[:, None]
    onehot = torch.zeros_like(z).scatter_(-1, index, here[:, None].to(z.dtype))
    return (z - lse_z[:, None]).exp() - onehot


def divergence_shard_torch(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor | None,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    divergence: str,
    param: float,
    temperature: float,
    hard_label_weight: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` of the divergence family on a slice, in PyTorch."""
    dtype = _compute_dtype(student)
    z = student.detach().to(dtype)
    a, b = teacher.to(dtype) / temperature, z / temperature
    zero = torch.zeros(z.shape[0], dtype=torch.float32, device=z.device)
    if phase == STATS:
        stats[:, 0], stats[:, 1] = a.logsumexp(-1), b.logsumexp(-1)
        stats[:, 2] = z.logsumexp(-1) if hard_label_weight > 0 else 0.0
        return zero
    lp, lq = a - stats[:, :1].to(dtype), b - stats[:, 1:2].to(dtype)
    terms, g = _slice_terms(lp, lq, divergence, param)
    if phase == ROW_SUM:
        stats[:, 3] = torch.where(valid, g.sum(-1), 0.0)
        return zero
    c = -1.0 if divergence in CONSTANT_ROW_SUM else stats[:, 3:].to(dtype)
    out = (g - lq.exp() * c) / temperature
    if hard_label_weight > 0:
        hard = hard_label_grad(z, stats[:, 2].to(dtype), labels)
        out = (1.0 - hard_label_weight) * out + hard_label_weight * hard
    # As in the fused kernels: a +inf global row sum means a +inf divergence (teacher −inf where the
    # student has mass): loss +inf, zero gradient.
    # A non-finite global log-sum-exp (NaN or +inf in some slice, or −inf everywhere): NaN.
    infinite = torch.zeros_like(valid) if divergence in CONSTANT_ROW_SUM else stats[:, 3] == float("inf")
    bad = ~stats[:, :2].isfinite().all(-1)
    out = torch.where(bad[:, None], float("nan"), out)
    grad.copy_(torch.where((valid & ~infinite)[:, None], out * scale, 0.0))
    terms = torch.where(bad, float("nan"), torch.where(infinite, float("inf"), terms))
    return torch.where(valid, terms, 0.0).to(torch.float32)


def taid_shard_torch(
    student: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor,
    t: torch.Tensor,
    scale: torch.Tensor,
    grad: torch.Tensor,
    stats: torch.Tensor,
    temperature: float,
    phase: int,
) -> torch.Tensor:
    """One vocabulary-parallel ``phase`` (STATS or GRAD) of TAID on a slice, in PyTorch: columns 0, 1
    of ``stats`` are the log-sum-exps of b = z/T and of the target logits (1 − t)·b + t·a."""
    dtype = _compute_dtype(student)
    b, a = student.detach().to(dtype) / temperature, teacher.to(dtype) / temperature
    mixed = interpolated_logits(b, a, t.to(dtype))
    zero = torch.zeros(b.shape[0], dtype=torch.float32, device=b.device)
    if phase == STATS:
        stats[:, 0], stats[:, 1] = b.logsumexp(-1), mixed.logsumexp(-1)
        return zero
    lq = b - stats[:, :1].to(dtype)
    target = (mixed - stats[:, 1:2].to(dtype)).exp()
    loss = -(target * lq.masked_fill(target == 0, 0.0)).sum(-1)
    grad.copy_(torch.where(valid[:, None], (lq.exp() - target) * (scale / temperature), 0.0))
    return torch.where(valid, loss, 0.0).to(torch.float32)
