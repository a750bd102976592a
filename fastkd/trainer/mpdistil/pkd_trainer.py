"""``PKDDistillationTrainer``: ``DistillationTrainer`` plus β·PKD on the [CLS] hidden states, so that
``fastkd glue distill --pkd-weight β [--pkd-layers 2,4]`` can add MPDistil's (and Patient-KD's, Sun et
al., arXiv 1908.09355) intermediate-layer term to any registered logit loss (e.g. ``prob_mse``).

The term is computed on training batches only (evaluation reports the logit objective). Like the
Sinkhorn term, each micro-batch's PKD (a batch mean) is weighted by its share of ``num_items_in_batch``,
so gradient accumulation matches the full batch.
"""

from __future__ import annotations

from typing import Any

import torch

from fastkd.trainer.losses import build_loss
from fastkd.trainer.trainer import DistillationTrainer


class PKDDistillationTrainer(DistillationTrainer):
    """The distillation objective of ``DistillationTrainer`` + ``pkd_weight``·PKD (registered loss ``pkd``)
    between student layers 1…L_S−1 and teacher layers ``pkd_layers`` (default: the first L_S−1)."""

    def __init__(self, *args: Any, pkd_weight: float, pkd_layers: list[int] | None = None, **kwargs: Any):
        if not pkd_weight > 0:
            raise ValueError(f"pkd_weight must be > 0, got {pkd_weight}")
        super().__init__(*args, **kwargs)
        self.pkd_weight, self.pkd_term = pkd_weight, build_loss("pkd", teacher_layers=pkd_layers)
        teacher_layers = self.teacher.config.num_hidden_layers
        self.pkd_term.layers(self.model.config.num_hidden_layers, teacher_layers)  # checks the map now
        self._teacher_hidden: tuple[torch.Tensor, ...] | None = None

    def _teacher_logits(self, inputs: dict[str, Any], device: torch.device) -> torch.Tensor:
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        self.teacher.eval()
        inputs = {k: v for k, v in inputs.items() if k != "output_hidden_states"}
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=True)
        self._teacher_hidden = out.hidden_states
        return out.logits

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {**inputs, "output_hidden_states": True}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        term = self.pkd_term(outputs.hidden_states, self._teacher_hidden)
        if num_items_in_batch is not None:
            rows = outputs.logits.shape[0]
            n = num_items_in_batch
            term = (
                term * rows / (n.to(term.device, torch.float32) if isinstance(n, torch.Tensor) else float(n))
            )
        self._sums["pkd"] = self._sums.get("pkd", 0.0) + term.detach().float()
        loss = loss + self.pkd_weight * term
        return (loss, outputs) if return_outputs else loss
