"""The hidden-state loss of fastkd's DistillationTrainer: from both models' last hidden states and
lm_heads to (loss, Σ student entropy, valid tokens), the triple TRL's ``compute_loss`` logs from.

Only the valid (completion) positions are projected. The logits of those positions are formed by
:func:`~fastkd.integrations.trl.heads.head_logits` and fed to the fused logit-level kernels; the
entropy H(softmax(z_s/T)) is computed from them without gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastkd.integrations.trl.heads import HeadTransform, head_logits
from fastkd.integrations.trl.loss import LossSpec

Model = tuple[torch.Tensor, torch.nn.Module, HeadTransform]  # (hidden [B, K, H], lm_head, transform)


def _plain_head(head: torch.nn.Module) -> torch.nn.Module:
    """The head itself, or (FSDP2) a Linear over its gathered weight: one all-gather, not one per use."""
    weight = head.weight
    if not isinstance(weight, torch.distributed.tensor.DTensor):
        return head
    plain = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=head.bias is not None, device="meta")
    plain.weight = weight.full_tensor()  # type: ignore[assignment]
    plain.bias = None if head.bias is None else head.bias.full_tensor()  # type: ignore[assignment]
    return plain


def student_entropy(student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token entropy H(q) = −Σ q log q of q = softmax(z/T), fp32, without gradient."""
    with torch.no_grad():
        log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
        return -(log_q.exp() * log_q).sum(-1)


def hidden_state_loss(
    spec: LossSpec,
    student: Model,
    teacher: Model,
    labels: torch.Tensor,
    mask: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``spec``'s loss over the tokens of ``mask`` [B, K] (``labels`` [B, K]: the next tokens, for the
    hard-label term); returns (loss, Σ entropy over valid tokens, number of valid tokens)."""
    rows = mask.reshape(-1)
    hidden_s, head_s, transform_s = student
    hidden_t, head_t, transform_t = teacher
    logits_s = head_logits(hidden_s.reshape(-1, hidden_s.shape[-1])[rows], _plain_head(head_s), transform_s)
    with torch.no_grad():
        logits_t = head_logits(
            hidden_t.reshape(-1, hidden_t.shape[-1])[rows], _plain_head(head_t), transform_t
        )
    loss = spec.logit_loss(
        logits_s, logits_t, labels.reshape(-1)[rows], num_items_in_batch=num_items_in_batch
    )
    entropy = student_entropy(logits_s, spec.temperature).sum()
    return loss, entropy, rows.sum()
