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
    """w_H·KL(p‖q) + w_T·KL(q‖p) with the adaptive head/tail weights of :func:`akl_weights`; a reverse
    part of weight 0 drops out (even where it is +inf)."""
    w_head, w_tail = akl_weights(lp, lq, mu)
    return w_head * forward_kl(lp, lq) + torch.where(w_tail > 0, w_tail * reverse_kl(lp, lq), 0.0)


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


def nonfinite_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bool [N]: rows of the tempered logits a, b with NaN or +inf, or −inf everywhere, in either
    (exactly the rows whose log-sum-exp is not finite)."""
    with torch.no_grad():
        return ~(torch.logsumexp(a, dim=-1).isfinite() & torch.logsumexp(b, dim=-1).isfinite())


def poison_rows(loss: torch.Tensor, student: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``loss`` [N] with NaN at the ``bad`` rows, whose gradient w.r.t. ``student`` [N, V] is NaN too
    (so GradScaler skips the step); the other rows' gradients are untouched."""
    poison = student.sum(-1) * torch.where(bad, float("nan"), 0.0)
    return torch.where(bad, poison, loss)


def infinite_rows(lp: torch.Tensor, lq: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """Bool [N]: rows whose divergence is +inf because the teacher is −inf where the student has mass
    (reverse KL, skew reverse KL at α = 0, AKL with a reverse part of weight > 0); spec conventions."""
    with torch.no_grad():
        outside = ((lp == NEG_INF) & (lq.exp() > 0)).any(-1)
        if options.divergence == "akl":
            return outside & (akl_weights(lp, lq, options.param)[1] > 0)
        reverse = options.divergence == "reverse_kl"
        return (
            outside
            if reverse or (options.divergence, options.param) == ("skew_reverse_kl", 0.0)
            else outside & False
        )


def divergence_rows(flat: FlatInputs, options: DivergenceOptions) -> torch.Tensor:
    """Per-token loss [N] (fp32, or fp64 for fp64 inputs), 0 at invalid tokens.

    A non-finite row (:func:`nonfinite_rows`) has loss NaN and a NaN gradient; an infinite one
    (:func:`infinite_rows`) has loss +inf and a zero gradient: both are computed on a harmless uniform
    row instead, so that nothing else sees them.
    """
    compute = torch.float64 if flat.student.dtype == torch.float64 else torch.float32
    keep = flat.valid[:, None]
    student = flat.student.to(compute).masked_fill(~keep, 0.0)
    teacher = flat.teacher.to(compute).masked_fill(~keep, 0.0)
    t = options.temperature
    b, a = student / t, teacher / t
    bad = nonfinite_rows(a, b)
    lq = F.log_softmax(b, dim=-1)
    lp = F.log_softmax(a, dim=-1)
    infinite = infinite_rows(lp, lq, options) & ~bad
    harmless = (bad | infinite)[:, None]
    uniform = -math.log(student.shape[-1])
    lq = torch.where(harmless, uniform, lq)
    lp = torch.where(harmless, uniform, lp)
    loss = per_token_divergence(lp, lq, options.divergence, options.param)
    w = options.hard_label_weight
    if w > 0.0:
        targets = flat.labels.masked_fill(~flat.valid, 0)
        hard = F.cross_entropy(student.masked_fill(harmless, 0.0), targets, reduction="none")
        loss = (1.0 - w) * loss + w * hard
    loss = torch.where(infinite, float("inf"), loss)
    return torch.where(flat.valid, poison_rows(loss, student, bad), 0.0)


def divergence_loss(flat: FlatInputs, options: DivergenceOptions) -> torch.Tensor:
    """The reduced loss of ``options.divergence`` on validated, flattened inputs."""
    return reduce_rows(divergence_rows(flat, options), flat.leading_shape, flat.divisor, options.reduction)
