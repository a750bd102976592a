"""The MPDistil loss pieces (``../shared/spec/losses.md``, "MPDistil pieces"), on [B, C] logits.

Conventions: ``labels`` are class indices (classification) or float targets (regression, one logit);
``gold_score`` is p_y, the softmax probability of the gold label, or −|y − ŷ| for regression.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def prob_mse_rows(student: Tensor, teacher: Tensor, temperature: float = 5.0) -> Tensor:
    """[...] per row: τ²·mean over classes of (softmax(u/τ) − softmax(z/τ))², u teacher, z student
    logits [..., C]. A regression head (C = 1) gets the plain squared logit difference, as in the
    released code."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    if student.shape[-1] == 1:
        return (student.float() - teacher.float()).pow(2).squeeze(-1)
    t = temperature
    diff = F.softmax(student.float() / t, dim=-1) - F.softmax(teacher.float() / t, dim=-1)
    return diff.pow(2).mean(-1) * t * t


def prob_mse(student: Tensor, teacher: Tensor, temperature: float = 5.0) -> Tensor:
    """τ²·mean over batch and classes of (softmax(u/τ) − softmax(z/τ))² (``prob_mse_rows`` averaged)."""
    return prob_mse_rows(student, teacher, temperature).mean()


def cls_states(hidden_states: Sequence[Tensor], layers: Sequence[int]) -> Tensor:
    """The [CLS] (position 0) vectors of the given ``layers`` of a HF ``hidden_states`` tuple
    (index 0 = embeddings, l = output of layer l): [len(layers), B, H]."""
    layers = list(layers)
    if not layers:
        return hidden_states[0][:, 0].new_zeros((0, *hidden_states[0][:, 0].shape))
    return torch.stack([hidden_states[layer][:, 0] for layer in layers])


def default_pkd_layers(student_layers: int) -> list[int]:
    """The teacher layers matched with student layers 1…L_S−1: the first L_S−1 (the released code)."""
    return list(range(1, student_layers))


def pkd(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    """Patient-KD term: mean over layer pairs, batch and hidden units of (ĥ_S − ĥ_T)², ĥ = h / ‖h‖₂,
    on [L, B, H] [CLS] states of matched layers (``cls_states``); 0 when there is no pair (L = 0)."""
    if student_cls.shape != teacher_cls.shape:
        raise ValueError(
            f"PKD: student states {tuple(student_cls.shape)} and teacher {tuple(teacher_cls.shape)} differ"
        )
    if student_cls.shape[0] == 0:
        return student_cls.new_zeros((), dtype=torch.float32)
    s = student_cls.float() / student_cls.float().norm(dim=-1, keepdim=True)
    t = teacher_cls.float() / teacher_cls.float().norm(dim=-1, keepdim=True)
    return (s - t).pow(2).mean()


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """CE(z, y) for classification; MSE(z, y) for a regression head (one logit)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
    return F.cross_entropy(logits.float(), labels.long().view(-1))


def gold_score(logits: Tensor, labels: Tensor) -> Tensor:
    """[B] p_y = softmax(z)[y] (classification) or −|y − ŷ| (regression)."""
    if logits.shape[-1] == 1:
        return -(labels.float().view(-1) - logits.float().view(-1)).abs()
    return F.softmax(logits.float(), dim=-1).gather(1, labels.long().view(-1, 1)).squeeze(1)


def student_loss(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    pkd_term: Tensor | float = 0.0,
    alpha: float = 0.5,
    beta: float = 100.0,
    temperature: float = 5.0,
) -> Tensor:
    """Phase 2: α·prob_mse(T′, S) + (1 − α)·CE(z_S, y) + β·PKD (α 0.5, β 100, τ 5)."""
    kd = prob_mse(student, teacher, temperature) if alpha else 0.0
    return alpha * kd + (1 - alpha) * task_loss(student, labels) + beta * pkd_term


def collaborative_loss(on_teacher: Tensor, on_student: Tensor, labels: Tensor) -> Tensor:
    """Phase 3, collaborative: ½·CE(T′(h_T), y) + ½·CE(T′(h_S), y) (MSE for regression)."""
    return 0.5 * task_loss(on_teacher, labels) + 0.5 * task_loss(on_student, labels)


def competitive_loss(on_teacher: Tensor, on_student: Tensor, labels: Tensor) -> Tensor:
    """Phase 3, competitive: CE(T′(h_T), y) − mean p_y(T′(h_T)) + mean p_y(T′(h_S))."""
    return (
        task_loss(on_teacher, labels)
        - gold_score(on_teacher, labels).mean()
        + gold_score(on_student, labels).mean()
    )


META_LOSSES = {"collaborative": collaborative_loss, "competitive": competitive_loss}


def curriculum_loss(student: Tensor, meta_on_student: Tensor, labels: Tensor) -> Tensor:
    """Phase 4 student loss: CE(z_S, y) − mean p_y(S) + mean p_y(T′(h_S)); the last term is taken without
    gradient (T′ runs under no_grad in the released code), so it only shifts the value."""
    return (
        task_loss(student, labels)
        - gold_score(student, labels).mean()
        + gold_score(meta_on_student.detach(), labels).mean()
    )


def quiz_reward(student: Tensor, meta: Tensor, labels: Tensor, kind: str) -> Tensor:
    """Reward of one quiz batch (before dividing by the quiz size): ``binary`` Σ 1[p_y(S) > p_y(T′)],
    ``real`` Σ (p_y(S) − p_y(T′)); regression uses −|y − ŷ| for p_y (so: S closer to y than T′)."""
    s, t = gold_score(student, labels), gold_score(meta, labels)
    if kind == "binary":
        return (s > t).float().sum()
    if kind == "real":
        return (s - t).sum()
    raise ValueError(f"reward must be 'binary' or 'real', got {kind!r}")


def discounted_returns(rewards: Tensor, gamma: float = 0.99, absolute_index: bool = True) -> Tensor:
    """Returns minus their mean (the baseline) for per-step rewards r_0…r_{n−1}.

    ``absolute_index=True`` (the released code): G_t = Σ_{j≥t} γ^j·r_j, the discount counts from the
    episode's start. ``False`` (the textbook rule): G_t = Σ_{j≥t} γ^(j−t)·r_j."""
    r = rewards.double()
    n = r.shape[0]
    steps = torch.arange(n, dtype=torch.float64, device=r.device)
    if absolute_index:
        g = (gamma**steps * r).flip(0).cumsum(0).flip(0)
    else:
        g = torch.zeros_like(r)
        running = 0.0
        for t in range(n - 1, -1, -1):
            running = r[t] + gamma * running
            g[t] = running
    return (g - g.mean()).float()


def reinforce_loss(probs: Tensor, actions: Tensor, returns: Tensor) -> Tensor:
    """−mean_t G_t·log π(a_t | s_t) for policy probabilities [T, A], actions [T] and returns [T]."""
    logp = torch.log(probs).gather(1, actions.long().view(-1, 1)).squeeze(1)
    return -(returns.to(logp.dtype) * logp).mean()


class ProbMSE:
    """``prob_mse`` as a registered trainer loss (``fastkd.trainer.losses``): per-row values averaged over
    the valid rows (``mask``, ``num_items_in_batch``) at the trainer's ``temperature``. τ² is included:
    do not add ``scale_by_temperature_squared``."""

    def __call__(self, student: Tensor, teacher: Tensor, **kw) -> Tensor:
        from fastkd.trainer.losses import masked_mean

        per_row = prob_mse_rows(student, teacher, kw.get("temperature", 1.0))
        return masked_mean(per_row, kw.get("mask"), kw.get("num_items_in_batch"))


class PKDTerm:
    """The PKD term on HF ``hidden_states`` tuples: student layers 1…L_S−1 against ``teacher_layers``
    (None: the first L_S−1). Not a logit loss: the trainer adds it with ``--pkd-weight``."""

    def __init__(self, teacher_layers: Sequence[int] | None = None) -> None:
        self.teacher_layers = None if teacher_layers is None else list(teacher_layers)

    def layers(self, student_layers: int, teacher_layers: int) -> list[int]:
        """The checked teacher layer map for a student of ``student_layers`` layers."""
        chosen = self.teacher_layers or default_pkd_layers(student_layers)
        if len(chosen) != student_layers - 1 or not all(1 <= x <= teacher_layers for x in chosen):
            raise ValueError(
                f"pkd layers must be {student_layers - 1} teacher layers in 1..{teacher_layers} (one per "
                f"student layer 1..{student_layers - 1}), got {chosen}"
            )
        return chosen

    def __call__(self, student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor]) -> Tensor:
        s_layers, t_layers = len(student_hidden) - 1, len(teacher_hidden) - 1
        chosen = self.layers(s_layers, t_layers)
        return pkd(cls_states(student_hidden, range(1, s_layers)), cls_states(teacher_hidden, chosen))
