"""The MPDistil phases, each usable on its own: data (quiz split, loaders), evaluation with best-on-dev
selection, one epoch of (distilled) student training, teacher fine-tuning, the meta-teacher and its epoch.

Optimisers follow the released code: AdamW (torch defaults, weight decay 0.01), no schedule, gradients
clipped to norm 1. Frozen models (teacher, T′'s encoder, the student in phase 3) run in eval mode under
no_grad; trained ones in train mode. (The released code leaves every model in eval mode after its first
evaluation, so its later epochs train without dropout; this is not reproduced.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fastkd.trainer.glue.metrics import MAIN_METRIC, glue_metrics
from fastkd.trainer.mpdistil.losses import META_LOSSES, cls_states, pkd, student_loss, task_loss
from fastkd.trainer.mpdistil.model import TaskModel

SELECTION_METRIC = {**MAIN_METRIC, "stsb": "spearman"}


def split_quiz(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train part, quiz part): a seeded random ``fraction`` of ``train`` (at least one example) is the
    quiz, the rest stays for training."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"quiz fraction must be in (0, 1), got {fraction}")
    if len(train) < 2:
        raise ValueError(f"cannot carve a quiz split out of {len(train)} training example(s)")
    order = np.random.default_rng(seed).permutation(len(train))
    n_quiz = min(max(1, round(fraction * len(train))), len(train) - 1)
    return train.select(sorted(order[n_quiz:])), train.select(sorted(order[:n_quiz]))


def make_loader(ds: Dataset, tokenizer: Any, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of a tokenized dataset, padded to the longest example; shuffled with a seeded generator."""
    from transformers import DataCollatorWithPadding

    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask", "labels") if c in ds.column_names]
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds.select_columns(columns),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator if shuffle else None,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: TaskModel, task: str, loader: DataLoader, groups: Any = None) -> dict[str, float]:
    """The task's metrics (``glue_metrics``) of ``model``'s ``task`` head over ``loader`` (in order)."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        batch = to_device(batch, _device(model))
        logits.append(model(batch, task).logits.float().cpu())
        labels.append(batch["labels"].cpu())
    preds, gold = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    return {k: round(float(v), 6) for k, v in glue_metrics(task, preds, gold, groups).items()}


def selection_score(task: str, metrics: dict[str, float]) -> float:
    """The model-selection metric: MCC (CoLA), F1 (MRPC, QQP), macro-F1 (CB), F1a (MultiRC), Spearman
    (STS-B), accuracy otherwise."""
    return metrics[SELECTION_METRIC[task]]


def _step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip: float) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad()


def train_epoch(
    student: TaskModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    teacher: TaskModel | None = None,
    alpha: float = 0.5,
    beta: float = 100.0,
    temperature: float = 5.0,
    pkd_layers: list[int] | None = None,
    max_grad_norm: float = 1.0,
    desc: str = "train",
) -> float:
    """One epoch of the phase-2 objective α·prob_mse(teacher, S) + (1 − α)·CE + β·PKD (``teacher``
    None: plain CE). PKD matches student layers 1…L_S−1 with teacher layers ``pkd_layers``.
    Returns the mean loss."""
    use_pkd = teacher is not None and beta > 0
    student_layers = list(range(1, student.num_layers))
    total, n = 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False):
        student.train()
        batch = to_device(batch, _device(student))
        out = student(batch, hidden_states=use_pkd)
        if teacher is None:
            loss = task_loss(out.logits, batch["labels"])
        else:
            teacher.eval()
            with torch.no_grad():
                t_out = teacher(batch, hidden_states=use_pkd)
            term = 0.0
            if use_pkd:
                term = pkd(
                    cls_states(out.hidden_states, student_layers), cls_states(t_out.hidden_states, pkd_layers)
                )
            loss = student_loss(out.logits, t_out.logits, batch["labels"], term, alpha, beta, temperature)
        _step(student, loss, optimizer, max_grad_norm)
        total, n = total + float(loss.detach()) * len(batch["labels"]), n + len(batch["labels"])
    return total / max(n, 1)


def fit(
    model: TaskModel, epochs: int, run_epoch: Callable[[int], float], validate: Callable[[], dict], task: str
) -> dict[str, Any]:
    """``epochs`` × (``run_epoch(epoch)``, ``validate()``); ``model`` ends with its best-on-dev weights.
    Returns {"metrics": best, "best_epoch", "history": [{epoch, loss, metrics}]}."""
    best = Best(task)
    for epoch in range(epochs):
        loss = run_epoch(epoch)
        best.update(model, {"epoch": epoch, "loss": loss, "metrics": validate()})
    return best.restore(model) if best.best else {"metrics": validate(), "best_epoch": None, "history": []}


class Best:
    """The best-on-dev entry of a history (by ``selection_score``) and the model weights that go with it."""

    def __init__(self, task: str, key: str = "epoch") -> None:
        self.task, self.key = task, key
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: torch.nn.Module, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        score = selection_score(self.task, entry["metrics"])
        if self.best is None or score > selection_score(self.task, self.best["metrics"]):
            self.best, self.state = entry, copy.deepcopy(model.state_dict())

    def restore(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the best weights into ``model``; {"metrics", "best_<key>", "history"}."""
        model.load_state_dict(self.state)
        return {
            "metrics": self.best["metrics"],
            f"best_{self.key}": self.best[self.key],
            "history": self.history,
        }


def adamw(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def meta_teacher(teacher: TaskModel) -> TaskModel:
    """T′: a copy of the teacher whose encoder is frozen (requires_grad False); its heads stay trainable."""
    meta = copy.deepcopy(teacher)
    meta.encoder.requires_grad_(False)
    return meta


def meta_epoch(
    meta: TaskModel,
    teacher: TaskModel,
    student: TaskModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    kind: str = "collaborative",
    max_grad_norm: float = 1.0,
    desc: str = "meta-teacher",
) -> float:
    """One phase-3 epoch on the quiz split: T′'s head learns from the frozen teacher's and student's pooled
    outputs h_T, h_S with the ``collaborative`` or ``competitive`` loss. Returns the mean loss."""
    if kind not in META_LOSSES:
        raise ValueError(f"meta loss must be one of {sorted(META_LOSSES)}, got {kind!r}")
    task = meta.main_task
    total, n = 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False):
        batch = to_device(batch, _device(meta))
        teacher.eval(), student.eval()
        with torch.no_grad():
            h_t, h_s = teacher(batch).pooled, student(batch).pooled
        meta.train()
        loss = META_LOSSES[kind](meta.head(task, h_t), meta.head(task, h_s), batch["labels"])
        _step(meta, loss, optimizer, max_grad_norm)
        total, n = total + float(loss.detach()) * len(batch["labels"]), n + len(batch["labels"])
    return total / max(n, 1)
