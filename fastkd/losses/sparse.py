"""nn.Module wrapper of the sparse (top-k) teacher KL: options fixed at construction, checked there."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastkd.functional.sparse import sparse_kl
from fastkd.sparse_inputs import SparseOptions

_CALL_OPTIONS = ("labels", "mask", "num_items_in_batch")


class SparseKLLoss(nn.Module):
    """``criterion(student_logits, teacher_topk_indices, teacher_topk_logprobs, labels=None, mask=None,
    num_items_in_batch=None)``; the keyword options (renormalize, temperature, reduction, ignore_index,
    backend) are those of :func:`fastkd.losses.sparse_kl`."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        taken = [name for name in _CALL_OPTIONS if name in options]
        if taken:
            raise TypeError(f"{taken} are per-call arguments of the loss, not construction options")
        SparseOptions(**{k: v for k, v in options.items() if k != "backend"})
        self.options = options

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_topk_indices: torch.Tensor,
        teacher_topk_logprobs: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return sparse_kl(
            student_logits,
            teacher_topk_indices,
            teacher_topk_logprobs,
            labels=labels,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            **self.options,
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
