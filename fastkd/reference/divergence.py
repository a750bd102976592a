"""Pure-PyTorch implementation of every divergence: the ``torch`` backend and the benchmarks' baseline.

Every formula follows ``shared/spec/losses.md``. With q = softmax(z/T) (student) and p = softmax(u/T)
(teacher), each function below maps per-token log-probabilities ``lp = log p`` and ``lq = log q`` of
shape [N, V] to a per-token loss of shape [N]. Autograd supplies the gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastkd.boundary.inputs import FlatInputs, reduce_rows
from fastkd.boundary.options import DivergenceOptions

NEG_INF = float("-inf")


def _kl_terms(lx: torch.Tensor, ly: torch.Tensor) -> torch.Tensor:
    """Elementwise x·(log x − log y), with 0·log 0 = 0 and no NaN gradient where x = 0."""
    keep = lx > NEG_INF
    lx = lx.masked_fill(~keep, 0.0)
    ly = ly.masked_fill(~keep, 0.0)
    return torch.where(keep, lx.exp() * (lx - ly), 0.0)


def _log_mixture(w1: float, lx: torch.Tensor, w2: float, ly: torch.Tensor) -> torch.Tensor:
    """log(w1·x + w2·y) as logaddexp(log w1 + log x, log w2 + log y); -inf where both parts vanish."""
    a = lx + (math.log(w1) if w1 > 0 else NEG_INF)
    b = ly + (math.log(w2) if w2 > 0 else NEG_INF)
    empty = (a == NEG_INF) & (b == NEG_INF)
    mixed = torch.logaddexp(a.masked_fill(empty, 0.0), b.masked_fill(empty, 0.0))
    return mixed.masked_fill(empty, NEG_INF)


def forward_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ p (log p − log q)."""
    return _kl_terms(lp, lq).sum(-1)


def soft_cross_entropy(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """H(p, q) = −Σ p log q = KL(p‖q) + H(p)."""
    p = lp.exp()
    return -torch.where(p > 0, p * lq.masked_fill(p == 0, 0.0), 0.0).sum(-1)


def reverse_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(q‖p) = Σ q (log q − log p)."""
    return _kl_terms(lq, lp).sum(-1)


def jsd(lp: torch.Tensor, lq: torch.Tensor, beta: float) -> torch.Tensor:
    """β·KL(p‖m) + (1−β)·KL(q‖m) with m = β p + (1−β) q; β is the teacher weight."""
    lm = _log_mixture(beta, lp, 1.0 - beta, lq)
    return (beta * _kl_terms(lp, lm) + (1.0 - beta) * _kl_terms(lq, lm)).sum(-1)


def skew_kl(lp: torch.Tensor, lq: torch.Tensor, alpha: float) -> torch.Tensor:
    """DistiLLM α-SKL: KL(p ‖ α p + (1−α) q), gradient through the mixture."""
    return _kl_terms(lp, _log_mixture(alpha, lp, 1.0 - alpha, lq)).sum(-1)


def skew_reverse_kl(lp: torch.Tensor, lq: torch.Tensor, alpha: float) -> torch.Tensor:
    """DistiLLM α-SRKL: KL(q ‖ (1−α) p + α q), gradient through the mixture."""
    return _kl_terms(lq, _log_mixture(1.0 - alpha, lp, alpha, lq)).sum(-1)


def tvd(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ |p − q|."""
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1)


def akl_weights(lp: torch.Tensor, lq: torch.Tensor, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive KL (Wu et al. 2024, arXiv 2404.02657) head/tail weights, without gradient.

    Teacher probabilities sorted descending; the head holds the tokens whose cumulative teacher mass is
    ≤ μ, plus the top-1 token. g_H, g_T = Σ |p − q| over head and tail; w = g / max(g_H + g_T, 1e-8).
    """
    with torch.no_grad():
        p, q = lp.exp(), lq.exp()
        p_sorted, order = p.sort(dim=-1, descending=True, stable=True)
        tail = p_sorted.cumsum(-1) > mu
        tail[..., 0] = False
        gap = (p_sorted - q.gather(-1, order)).abs()
        g_head = gap.masked_fill(tail, 0.0).sum(-1)
        g_tail = gap.masked_fill(~tail, 0.0).sum(-1)
        total = (g_head + g_tail).clamp_min(1e-8)
        return g_head / total, g_tail / total


def akl(lp: torch.Tensor, lq: torch.Tensor, mu: float) -> torch.Tensor:
    """w_H·KL(p‖q) + w_T·KL(q‖p) with the adaptive head/tail weights of :func:`akl_weights`."""
    w_head, w_tail = akl_weights(lp, lq, mu)
    return w_head * forward_kl(lp, lq) + w_tail * reverse_kl(lp, lq)


_PLAIN = {
    "forward_kl": forward_kl,
    "soft_cross_entropy": soft_cross_entropy,
    "reverse_kl": reverse_kl,
    "tvd": tvd,
}
_WITH_PARAM = {"jsd": jsd, "skew_kl": skew_kl, "skew_reverse_kl": skew_reverse_kl, "akl": akl}


def per_token_divergence(lp: torch.Tensor, lq: torch.Tensor, divergence: str, param: float) -> torch.Tensor:
    """Dispatch on the divergence name; ``param`` is β, α or μ where the divergence has one."""
    if divergence in _WITH_PARAM:
        return _WITH_PARAM[divergence](lp, lq, param)
    return _PLAIN[divergence](lp, lq)


def divergence_rows(flat: FlatInputs, options: DivergenceOptions) -> torch.Tensor:
    """Per-token loss [N] (fp32, or fp64 for fp64 inputs), 0 at invalid tokens."""
    compute = torch.float64 if flat.student.dtype == torch.float64 else torch.float32
    keep = flat.valid[:, None]
    student = flat.student.to(compute).masked_fill(~keep, 0.0)
    teacher = flat.teacher.to(compute).masked_fill(~keep, 0.0)
    t = options.temperature
    lq = F.log_softmax(student / t, dim=-1)
    lp = F.log_softmax(teacher / t, dim=-1)
    loss = per_token_divergence(lp, lq, options.divergence, options.param)
    w = options.hard_label_weight
    if w > 0.0:
        targets = flat.labels.masked_fill(~flat.valid, 0)
        hard = F.cross_entropy(student, targets, reduction="none")
        loss = (1.0 - w) * loss + w * hard
    return torch.where(flat.valid, loss, 0.0)


def divergence_loss(flat: FlatInputs, options: DivergenceOptions) -> torch.Tensor:
    """The reduced loss of ``options.divergence`` on validated, flattened inputs."""
    return reduce_rows(divergence_rows(flat, options), flat.leading_shape, flat.divisor, options.reduction)
