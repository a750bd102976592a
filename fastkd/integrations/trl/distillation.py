"""TRL's stable ``DistillationTrainer`` with fastkd as its loss. Generation (``generate`` or vLLM),
batching, the backbone forwards, the FSDP/DeepSpeed redirection and the metrics are TRL's; only the
hidden-state loss after the backbones (TRL's ``_chunked_divergence_loss``) is replaced.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DistillationTrainer as TRLDistillationTrainer

from fastkd.integrations.trl.compat import check_trl, gathered_heads
from fastkd.integrations.trl.heads import head_transform
from fastkd.integrations.trl.hidden import hidden_state_loss
from fastkd.integrations.trl.loss import loss_spec

# The multimodal fields TRL's batch may carry, forwarded to both backbones as TRL does.
MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


class DistillationTrainer(TRLDistillationTrainer):
    """``trl.DistillationTrainer`` whose loss is fastkd's (``args``: :class:`DistillationConfig`, or
    TRL's own config for TRL's JSD on fastkd kernels).

    The loss on the completion tokens (``completion_mask``, times ``tool_mask`` where present) is the
    configured divergence between softmax(z_s/T) and softmax(z_t/T), z = softcap(s·(h Wᵀ + b)) per model
    (scale and cap from each config, as TRL reads them): TRL's generalised JSD at ``beta`` by default.
    Mean over the valid tokens, or Σ / ``num_items_in_batch``; the student's mean entropy is logged as
    TRL logs it (``entropy``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_trl()
        super().__init__(*args, **kwargs)
        self.fastkd_loss = loss_spec(self.args, temperature=self.temperature)

    def _compute_loss(
        self, unwrapped_student: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, detached Σ student entropy, number of valid tokens), what TRL's compute_loss expects."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            loss_mask = loss_mask * inputs["tool_mask"]
        keep = inputs["completion_ids"].size(1)
        multimodal = {k: inputs[k] for k in MULTIMODAL_KEYS if k in inputs}
        student_hidden = self._get_last_hidden_state(
            unwrapped_student, input_ids, attention_mask, keep, **multimodal
        )
        self.teacher_model.eval()
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            teacher_hidden = self._forward_redirection(
                self.teacher_model,
                unwrapped_teacher,
                self._get_last_hidden_state,
                unwrapped_teacher,
                input_ids,
                attention_mask,
                keep,
                **multimodal,
            )
        student_head = unwrapped_student.get_output_embeddings()
        teacher_head = unwrapped_teacher.get_output_embeddings()
        device = student_head.weight.device
        if teacher_head.weight.device != device:
            raise ValueError(
                f"the student lm_head is on {device} but the teacher lm_head is on "
                f"{teacher_head.weight.device}; place both on the same device in their device_map"
            )
        with gathered_heads(student_head, teacher_head):
            loss, entropy_sum, n_valid = hidden_state_loss(
                self.fastkd_loss,
                (student_hidden.to(device), student_head, head_transform(unwrapped_student.config)),
                (teacher_hidden.to(device), teacher_head, head_transform(unwrapped_teacher.config)),
                inputs["completion_ids"].to(device),
                loss_mask.to(device) != 0,
                num_items_in_batch,
            )
        return loss, entropy_sum.detach(), n_valid
