"""A BERT-like sequence classifier with one classification head per task, as MPDistil uses them.

The main task's head is the model's own ``dropout`` + ``classifier``; the other tasks of a curriculum get
new heads (dropout + linear, weights N(0, 0.02), bias 0: the released code's ``SequenceClassificationHead``).
``h`` (the "pooled output") is the encoder's ``pooler_output`` (BERT: tanh(W·h_[CLS] + b)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

HEADS_FILE = "mpdistil_heads.pt"


@dataclass
class Forward:
    """Logits [B, C], pooled output h [B, H] and the hidden-state tuple (None unless asked for)."""

    logits: torch.Tensor
    pooled: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None


def _new_head(hidden: int, num_labels: int, dropout: float) -> nn.Sequential:
    linear = nn.Linear(hidden, num_labels)
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.Dropout(dropout), linear)


class TaskModel(nn.Module):
    """``model`` (a HF ``*ForSequenceClassification`` with ``dropout``, ``classifier`` and a pooler) with
    extra heads ``{task: num_labels}`` for the other tasks of a curriculum."""

    def __init__(self, model: nn.Module, main_task: str, extra_tasks: dict[str, int] | None = None) -> None:
        super().__init__()
        for attr in ("dropout", "classifier"):
            if not isinstance(getattr(model, attr, None), nn.Module):
                raise ValueError(
                    f"MPDistil needs a BERT-like classifier with a pooler, `dropout` and `classifier`; "
                    f"{type(model).__name__} has no {attr!r}"
                )
        self.model, self.main_task = model, main_task
        hidden = model.config.hidden_size
        p = getattr(model.config, "hidden_dropout_prob", 0.1)
        extra = {t: n for t, n in (extra_tasks or {}).items() if t != main_task}
        self.heads = nn.ModuleDict({t: _new_head(hidden, n, p) for t, n in extra.items()})

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def head(self, task: str, pooled: torch.Tensor) -> torch.Tensor:
        """Logits of ``task``'s head on pooled outputs h [B, H]."""
        if task == self.main_task:
            return self.model.classifier(self.model.dropout(pooled))
        if task not in self.heads:
            raise ValueError(f"no head for task {task!r}; heads: {[self.main_task, *self.heads]}")
        return self.heads[task](pooled)

    def encode(self, batch: dict[str, torch.Tensor], hidden_states: bool = False) -> Any:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = self.encoder(**inputs, output_hidden_states=hidden_states)
        if getattr(out, "pooler_output", None) is None:
            raise ValueError(f"{type(self.encoder).__name__} gives no pooler_output: MPDistil needs a pooler")
        return out

    def forward(self, batch: dict[str, torch.Tensor], task: str | None = None, hidden_states: bool = False):
        out = self.encode(batch, hidden_states)
        task = task or self.main_task
        return Forward(self.head(task, out.pooler_output), out.pooler_output, out.hidden_states)

    def save(self, directory: str, tokenizer: Any = None) -> None:
        """``save_pretrained`` of the model (its main head) plus the extra heads in ``HEADS_FILE``."""
        self.model.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        torch.save(self.heads.state_dict(), os.path.join(directory, HEADS_FILE))

    def load_heads(self, directory: str) -> None:
        path = os.path.join(directory, HEADS_FILE)
        if os.path.exists(path):
            self.heads.load_state_dict(torch.load(path, weights_only=True))


def load_classifier(path: str, num_labels: int | None) -> nn.Module:
    """``AutoModelForSequenceClassification`` from ``path``; with ``num_labels`` a head of that size (a new
    one when the checkpoint's differs), else the checkpoint's own head."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {}
    if num_labels is not None:
        kwargs = {"num_labels": num_labels, "ignore_mismatched_sizes": True}
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load model {path!r}: {err}") from err
