"""The hidden-state loss of fastkd's DistillationTrainer: from both models' last hidden states and
lm_heads to (loss, Σ student entropy, valid tokens), the triple TRL's ``compute_loss`` logs from.

The loss is :func:`fastkd.losses.fused_linear_kd`: only the valid (completion) positions are projected,
chunk by chunk, and the gradient is computed in the forward pass; neither model's [tokens, V] logits
exist. A top-k teacher (``fastkd_teacher_topk``) is taken chunk by chunk from the teacher's head.
The logged entropy H(softmax(z_s/T)) is one more chunked student projection without gradient.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from fastkd.functional.fused_linear import fused_linear_kd
from fastkd.functional.sparse import teacher_topk
from fastkd.integrations.trl.heads import HeadTransform, head_logits
from fastkd.integrations.trl.loss import LossSpec

Model = tuple[torch.Tensor, torch.nn.Module, HeadTransform]  # (hidden [B, K, H], lm_head, transform)
TopK = tuple[torch.Tensor, torch.Tensor]  # a cached teacher: (indices [B, K, k], log-probs [B, K, k])
Head = tuple[torch.Tensor, torch.Tensor | None, HeadTransform]  # (weight [V, H], bias [V] or None, transform)
CHUNK_BYTES = 64 << 20  # the [chunk, V] fp32 logits of the no-grad passes (entropy, top-k teacher)


def _plain(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """The tensor, or under FSDP2 (a DTensor) its gathered full tensor, once per step."""
    if isinstance(tensor, torch.distributed.tensor.DTensor):
        return tensor.full_tensor()
    return tensor


def _chunked_logits(hidden: torch.Tensor, head: Head) -> Iterator[torch.Tensor]:
    """The logits of the rows of ``hidden`` [n, H], one [chunk, V] block at a time."""
    weight, bias, transform = head
    step = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    return (head_logits(rows, weight, bias, transform) for rows in hidden.split(step))


@torch.no_grad()
def entropy_sum(hidden: torch.Tensor, head: Head, t: float) -> torch.Tensor:
    """Σ over the rows of ``hidden`` [n, H] of H(q) = −Σ q log q, q = softmax(z/T), in chunks (fp32)."""
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for logits in _chunked_logits(hidden, head):
        log_q = F.log_softmax(logits.float() / t, dim=-1)
        total += -(log_q.exp() * log_q).sum()
    return total


@torch.no_grad()
def chunked_topk(hidden: torch.Tensor, head: Head, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k (indices, log-probs at T = 1) for the rows of ``hidden`` [n, H], in chunks."""
    parts = [teacher_topk(logits, k) for logits in _chunked_logits(hidden, head)]
    if not parts:
        return hidden.new_zeros(0, k, dtype=torch.long), hidden.new_zeros(0, k, dtype=torch.float32)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _teacher_inputs(
    spec: LossSpec, teacher: Model | TopK, mask: torch.Tensor
) -> dict[str, torch.Tensor | float | None]:
    """The teacher arguments of ``fused_linear_kd``: a cached top-k as it is; hidden states and head;
    or (``fastkd_teacher_topk``) the teacher's top-k at the valid tokens (zeros elsewhere, masked out)."""
    if len(teacher) == 2:
        return {"teacher_topk_indices": teacher[0], "teacher_topk_logprobs": teacher[1]}
    hidden, module, transform = teacher
    weight, bias = _plain(module.weight), _plain(module.bias)
    if spec.teacher_topk is None:
        return {
            "teacher_hidden": hidden,
            "teacher_weight": weight,
            "teacher_bias": bias,
            "teacher_logit_scale": transform.scale,
            "teacher_softcap": transform.softcap or None,
        }
    k, rows = spec.teacher_topk, mask.reshape(-1)
    indices = hidden.new_zeros(rows.numel(), k, dtype=torch.long)
    logprobs = hidden.new_zeros(rows.numel(), k, dtype=torch.float32)
    indices[rows], logprobs[rows] = chunked_topk(
        hidden.reshape(-1, hidden.shape[-1])[rows], (weight, bias, transform), k
    )
    shape = (*mask.shape, k)
    return {"teacher_topk_indices": indices.reshape(shape), "teacher_topk_logprobs": logprobs.reshape(shape)}


def hidden_state_loss(
    spec: LossSpec,
    student: Model,
    teacher: Model | TopK,
    labels: torch.Tensor,
    mask: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``spec``'s loss over the tokens of ``mask`` [B, K] (``labels`` [B, K]: the next tokens, for the
    hard-label term), from a live teacher or a cached top-k; returns (loss, Σ entropy over valid tokens,
    number of valid tokens); the entropy is None with ``entropy=False`` (no extra projection)."""
    hidden_s, module_s, transform_s = student
    head_s = (_plain(module_s.weight), _plain(module_s.bias), transform_s)
    options = {
        "divergence": spec.divergence,
        "student_bias": head_s[1],
        "student_logit_scale": transform_s.scale,
        "student_softcap": transform_s.softcap or None,
        "labels": labels,
        "mask": mask,
        "num_items_in_batch": num_items_in_batch,
        **spec.kd_kwargs(),
    }
    if spec.teacher_topk is not None or len(teacher) == 2:
        options.update(divergence="forward_kl", beta=None)
    loss = fused_linear_kd(hidden_s, head_s[0], **_teacher_inputs(spec, teacher, mask), **options)
    if not entropy:
        return loss, None, mask.sum()
    valid_s = hidden_s.detach().reshape(-1, hidden_s.shape[-1])[mask.reshape(-1)]
    return loss, entropy_sum(valid_s, head_s, spec.temperature), mask.sum()
