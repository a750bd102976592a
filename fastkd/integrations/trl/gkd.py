"""TRL's ``GKDTrainer`` with fastkd as its loss: everything but the loss (on-policy generation with
probability ``lmbda``, ``seq_kd``, the ChatML collator, logging, accelerate) is TRL's own code.

Off-policy batches may carry the teacher's top-k from an offline cache (``fastkd lm cache-teacher``):
build the dataset with :func:`fastkd.integrations.trl.teacher_cache.cache_dataset` and pass its
collator; such batches never run the teacher. A cache is off-policy only (``lmbda=0``, no ``seq_kd``).
"""

from __future__ import annotations

from typing import Any

import torch
from trl.experimental.gkd import GKDTrainer as TRLGKDTrainer
from trl.experimental.utils import empty_cache

from fastkd.integrations.trl.compat import check_trl
from fastkd.integrations.trl.jsd import generalized_jsd_loss
from fastkd.integrations.trl.loss import loss_spec

CACHE_KEYS = ("teacher_topk_indices", "teacher_topk_logprobs")


class GKDTrainer(TRLGKDTrainer):
    """``trl.experimental.gkd.GKDTrainer`` whose loss is fastkd's (``args``: :class:`GKDConfig`, or
    TRL's own config for TRL's JSD on fastkd kernels).

    Per batch: the student's and teacher's logits as in TRL (shifted by one), then
    ``LossSpec.logit_loss``: TRL's generalised JSD at ``beta`` by default, or the ``fastkd_*`` choice;
    mean over the tokens whose label is not −100, or Σ / ``num_items_in_batch`` as TRL reduces.
    """

    generalized_jsd_loss = staticmethod(generalized_jsd_loss)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_trl()
        super().__init__(*args, **kwargs)
        self.fastkd_loss = loss_spec(self.args, temperature=1.0)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        student_outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        student_logits = student_outputs.logits[:, :-1, :]
        labels = inputs["labels"][:, 1:]
        if all(key in inputs for key in CACHE_KEYS):
            if self.lmbda > 0.0 or self.seq_kd:
                raise ValueError(
                    "a batch carries a cached teacher top-k, which is off-policy only: set lmbda=0.0 and "
                    f"seq_kd=False (got lmbda={self.lmbda}, seq_kd={self.seq_kd})"
                )
            indices, logprobs = (inputs[key][:, :-1] for key in CACHE_KEYS)
            loss = self.fastkd_loss.sparse_loss(
                student_logits, indices, logprobs, labels, num_items_in_batch=num_items_in_batch
            )
        else:
            self.teacher_model.eval()
            with torch.no_grad():
                teacher_logits = self.teacher_model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                ).logits[:, :-1, :]
            loss = self.fastkd_loss.logit_loss(
                student_logits, teacher_logits, labels, num_items_in_batch=num_items_in_batch
            )
        empty_cache()
        return (loss, student_outputs) if return_outputs else loss
