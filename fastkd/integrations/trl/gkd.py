"""TRL's ``GKDTrainer`` with fastkd as its loss: everything but the loss (on-policy generation with
probability ``lmbda``, ``seq_kd``, the ChatML collator, logging, accelerate) is TRL's own code.

Off-policy batches may carry the teacher's top-k from an offline cache (``fastkd lm cache-teacher``):
build the dataset with :func:`fastkd.integrations.trl.teacher_cache.cache_dataset` and pass its
collator; such batches never run the teacher. A cache is off-policy only (``lmbda=0``, no ``seq_kd``).
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl.experimental.gkd import GKDTrainer as TRLGKDTrainer
from trl.experimental.utils import empty_cache
from trl.models.utils import _ForwardRedirection

from fastkd.integrations.trl.compat import check_trl, gathered_heads
from fastkd.integrations.trl.heads import head_transform
from fastkd.integrations.trl.hidden import hidden_state_loss
from fastkd.integrations.trl.jsd import generalized_jsd_loss
from fastkd.integrations.trl.loss import loss_spec

CACHE_KEYS = ("teacher_topk_indices", "teacher_topk_logprobs")


def last_hidden_state(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The backbone's last hidden states [B, L, H] (the lm_head is not run)."""
    if is_peft_model(model):
        model = model.base_model.model
    out = model.base_model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
    )
    return out.last_hidden_state


class GKDTrainer(TRLGKDTrainer):
    """``trl.experimental.gkd.GKDTrainer`` whose loss is fastkd's (``args``: :class:`GKDConfig`, or
    TRL's own config for TRL's JSD on fastkd kernels).

    Per batch, as TRL: the student's and teacher's next-token distributions at every position whose
    shifted label is not −100, then TRL's generalised JSD at ``beta`` (T = 1) by default, or the
    ``fastkd_*`` choice; mean over those tokens, or Σ / ``num_items_in_batch``. With
    ``fastkd_fused_linear=True`` the loss takes both backbones' hidden states and lm_heads
    (``fused_linear_kd``): neither model's logits are formed.
    """

    generalized_jsd_loss = staticmethod(generalized_jsd_loss)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_trl()
        super().__init__(*args, **kwargs)
        self.fastkd_loss = loss_spec(self.args, temperature=1.0)
        self.fused_linear = bool(getattr(self.args, "fastkd_fused_linear", False))
        self._forward_redirection = _ForwardRedirection()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        cached = None
        if all(key in inputs for key in CACHE_KEYS):
            if self.lmbda > 0.0 or self.seq_kd:
                raise ValueError(
                    "a batch carries a cached teacher top-k, which is off-policy only: set lmbda=0.0 and "
                    f"seq_kd=False (got lmbda={self.lmbda}, seq_kd={self.seq_kd})"
                )
            cached = tuple(inputs[key][:, :-1] for key in CACHE_KEYS)
        labels = inputs["labels"][:, 1:]
        if self.fused_linear:
            loss, outputs = self._fused_linear_loss(model, inputs, labels, cached, num_items_in_batch), {}
        else:
            loss, outputs = self._logit_loss(model, inputs, labels, cached, num_items_in_batch)
        empty_cache()
        return (loss, outputs) if return_outputs else loss

    def _teacher(self, method: Any, inputs: dict[str, torch.Tensor]) -> Any:
        self.teacher_model.eval()
        with torch.no_grad():
            return method(self.teacher_model, inputs)

    def _logit_loss(self, model, inputs, labels, cached, num_items_in_batch) -> tuple[torch.Tensor, Any]:
        """TRL's flow: both models' logits, shifted by one."""
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        student_logits = outputs.logits[:, :-1, :]
        if cached is not None:
            return self.fastkd_loss.sparse_loss(
                student_logits, *cached, labels, num_items_in_batch=num_items_in_batch
            ), outputs
        teacher = self._teacher(
            lambda m, x: m(input_ids=x["input_ids"], attention_mask=x["attention_mask"]), inputs
        )
        loss = self.fastkd_loss.logit_loss(
            student_logits, teacher.logits[:, :-1, :], labels, num_items_in_batch=num_items_in_batch
        )
        return loss, outputs

    def _fused_linear_loss(self, model, inputs, labels, cached, num_items_in_batch) -> torch.Tensor:
        """Hidden states and lm_heads into fused_linear_kd. The student's whole side (backbone, lm_head,
        loss) runs as the accelerate wrapper's forward: DDP (with HF's find_unused_parameters) marks
        every parameter its forward does not reach as ready, so an lm_head used after it would be
        marked twice. No entropy: TRL's GKD logs none."""
        teacher_side, heads = cached, []
        if cached is None:
            teacher = self.accelerator.unwrap_model(self.teacher_model)
            teacher_hidden = self._teacher(lambda m, x: last_hidden_state(teacher, x), inputs)[:, :-1]
            teacher_side = (teacher_hidden, teacher.get_output_embeddings(), head_transform(teacher.config))
            heads.append(teacher_side[1])

        def student_loss(student: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = last_hidden_state(student, inputs)[:, :-1]
            student_side = (hidden, student.get_output_embeddings(), head_transform(student.config))
            with gathered_heads(student_side[1], *heads):
                loss, _, _ = hidden_state_loss(
                    self.fastkd_loss,
                    student_side,
                    teacher_side,
                    labels,
                    labels != -100,
                    num_items_in_batch,
                    False,
                )
            return loss

        student = self.accelerator.unwrap_model(model)
        return self._forward_redirection(model, student, student_loss, student, inputs)
