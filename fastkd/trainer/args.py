"""``DistillationArguments``: HuggingFace ``TrainingArguments`` plus the distillation objective."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments


@dataclass
class DistillationArguments(TrainingArguments):
    """Training arguments plus what defines the distillation objective.

    The total loss is ``(1 - w)·s·KD + w·CE + λ·Sinkhorn`` where ``KD`` is the registered loss
    ``loss_name`` (see ``fastkd.trainer.losses.available_losses()``) at ``temperature``, ``s`` is T² when
    ``scale_by_temperature_squared`` (Hinton et al., arXiv 1503.02531) and 1 otherwise, ``w`` is
    ``hard_label_weight`` (default 0: pure distillation; mixing in the hard-label CE is explicit) and ``λ``
    is ``sinkhorn_weight`` (0: no Sinkhorn term; SinKD, arXiv 2402.17110).
    """

    teacher_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher model (hub name or path); or pass teacher_model to the trainer."},
    )
    loss_name: str = field(default="forward_kl", metadata={"help": "Registered distillation loss name."})
    loss_options: str | dict[str, Any] | None = field(
        default=None, metadata={"help": "Extra loss options as a dict or a JSON object string."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature T of the KD term."})
    scale_by_temperature_squared: bool = field(
        default=False, metadata={"help": "Multiply the KD term by T² (Hinton-style gradient scale)."}
    )
    hard_label_weight: float = field(
        default=0.0, metadata={"help": "Weight w of the hard-label loss: (1-w)·KD + w·CE. 0 = pure KD."}
    )
    sinkhorn_weight: float = field(
        default=0.0, metadata={"help": "Weight of the added SinKD Sinkhorn term (0 = off)."}
    )
    kd_backend: str = field(default="auto", metadata={"help": "fastkd backend: auto, triton, cpu or torch."})
    fused_linear: bool = field(
        default=False,
        metadata={
            "help": "Causal LMs: loss from hidden states + lm_head weights (fastkd.trainer.fused_linear)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.loss_options, str):
            try:
                self.loss_options = json.loads(self.loss_options)
            except json.JSONDecodeError as err:
                raise ValueError(f"loss_options is not a JSON object: {self.loss_options!r}") from err
        self.loss_options = dict(self.loss_options or {})
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.hard_label_weight <= 1.0:
            raise ValueError(f"hard_label_weight must be in [0, 1], got {self.hard_label_weight}")
        if self.sinkhorn_weight < 0:
            raise ValueError(f"sinkhorn_weight must be >= 0, got {self.sinkhorn_weight}")
