"""nn.Module wrapper of the sparse (top-k) teacher KL: options fixed at construction, checked there."""

from __future__ import annotations

from typing import Any

import torch

from fastkd.boundary.sparse import SparseOptions
from fastkd.functional.sparse import sparse_kl
from fastkd.losses._base import FixedOptionsLoss


class SparseKLLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_topk_indices, teacher_topk_logprobs, labels=None, mask=None,
    num_items_in_batch=None)``; the keyword options (renormalize, temperature, reduction, ignore_index,
    backend) are those of :func:`fastkd.losses.sparse_kl`."""

    function = staticmethod(sparse_kl)

    def __init__(self, **options: Any) -> None:
        super().__init__(options)
        SparseOptions(**{k: v for k, v in options.items() if k != "backend"})

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
