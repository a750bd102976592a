"""``DistillationTrainer``: a ``transformers.Trainer`` whose loss is a fastkd distillation objective."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer, TrainerCallback

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.distributed import global_token_count, valid_token_count
from fastkd.trainer.fsdp import enable_fsdp_on_cpu, set_precision_policy, sharded_full_state_dict
from fastkd.trainer.fused_linear import fused_linear_loss
from fastkd.trainer.losses import build_loss, loss_entry, masked_mean
from fastkd.trainer.preflight import check_backend, check_model_source, first_line

TASKS = ("classification", "regression", "causal_lm")
LOSS_STATE_NAME = "fastkd_loss_state.pt"


def load_teacher(name_or_path: str, task: str, **kwargs: Any) -> torch.nn.Module:
    """``from_pretrained`` the teacher for ``task``; a one-line ValueError when it cannot be loaded
    ("teacher not found" for a missing folder or an uncached hub name offline)."""
    check_model_source(name_or_path, "", "teacher")
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    try:
        return auto.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load teacher {name_or_path!r}: {first_line(err)}") from None


def _out_dim(model: torch.nn.Module, task: str) -> int:
    config = model.config
    return int(config.vocab_size if task == "causal_lm" else config.num_labels)


def check_compatible(student: torch.nn.Module, teacher: torch.nn.Module, task: str) -> None:
    """Teacher and student must produce logits over the same labels / vocabulary."""
    s, t = _out_dim(student, task), _out_dim(teacher, task)
    if s != t:
        what = "vocabulary size" if task == "causal_lm" else "number of labels"
        raise ValueError(f"teacher and student disagree on the {what}: teacher {t}, student {s}")


class _EndStep(TrainerCallback):
    """Tells the trainer (and a stateful loss such as TAID) that an optimizer step ended."""

    def __init__(self, trainer: DistillationTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._on_step_end()


class DistillationTrainer(Trainer):
    """Trainer for ``(1-w)·s·KD + w·CE + λ·Sinkhorn`` (see :class:`DistillationArguments`).

    ``task`` is ``"classification"``, ``"regression"`` (one logit, MSE hard loss) or ``"causal_lm"``
    (logits shifted by one; positions whose label is -100, e.g. prompts, are masked out). The teacher
    (``teacher_model`` or ``args.teacher_name_or_path``) runs in eval mode under no_grad on the
    student's device in its own dtype, under the run's autocast (``bf16`` / ``fp16`` arguments) like
    the student and the loss (:meth:`compute_loss_context_manager`). With a ``"topk"`` loss such as
    ``sparse_kl`` the batches carry ``teacher_topk_indices`` / ``teacher_topk_logprobs`` from a teacher
    cache and no teacher is needed.
    The losses are normalised by ``num_items_in_batch``, so gradient accumulation matches a big batch.
    Multi-process runs: DDP, or FSDP2 (HF's ``fsdp`` arguments, accelerate's plugin, CPU included) for
    the student, the teacher replicated per rank (see :mod:`fastkd.trainer.fsdp`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: DistillationArguments,
        teacher_model: torch.nn.Module | None = None,
        task: str = "classification",
        **kwargs: Any,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
        if not isinstance(args, DistillationArguments):
            raise TypeError(f"args must be DistillationArguments, got {type(args).__name__}")
        self.task = task
        entry = loss_entry(args.loss_name)
        if task == "regression" and args.loss_name != "mse":
            raise ValueError(
                f"a regression student (one logit) distils with loss 'mse', got {args.loss_name!r}"
            )
        self.teacher_signal = entry.teacher
        check_backend(args.kd_backend, "kd_backend", args.device.type)
        self.sinkhorn_fn = build_loss("sinkhorn") if args.sinkhorn_weight > 0 else None
        # w = 1 without Sinkhorn: the KD term has weight 0, so neither it nor the teacher is computed.
        self.uses_kd = args.hard_label_weight < 1
        self.needs_teacher = (
            self.uses_kd and self.teacher_signal == "logits"
        ) or self.sinkhorn_fn is not None
        if teacher_model is None and args.teacher_name_or_path and self.needs_teacher:
            teacher_model = load_teacher(args.teacher_name_or_path, task)
        if teacher_model is None and self.needs_teacher:
            raise ValueError(
                f"loss {args.loss_name!r} needs a teacher: pass teacher_model or set teacher_name_or_path"
            )
        if teacher_model is not None:
            check_compatible(model, teacher_model, task)
            teacher_model.eval().requires_grad_(False)
        self.teacher = teacher_model
        super().__init__(model=model, args=args, **kwargs)
        options = dict(args.loss_options)
        if "total_steps" in inspect.signature(entry.factory).parameters and "total_steps" not in options:
            options["total_steps"] = self._planned_steps()
        self.loss_fn = build_loss(args.loss_name, **options)
        self.add_callback(_EndStep(self))
        # Our losses divide by num_items_in_batch: ask Trainer to count it and not rescale by GA steps.
        self.model_accepts_loss_kwargs = True
        self._sums: dict[str, torch.Tensor] = {}
        self._steps_since_log = 0

    def create_accelerator_and_postprocess(self) -> None:
        """HF's accelerator; with FSDP asked for on a multi-process CPU run, FSDP2 there too (see
        :func:`fastkd.trainer.fsdp.enable_fsdp_on_cpu`) instead of accelerate's silent DDP."""
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args.fsdp_plugin_args):
            self.is_fsdp_enabled = True
        set_precision_policy(self.accelerator)

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """HF's context plus the run's autocast (``bf16`` / ``fp16``; nothing in fp32). Accelerate
        autocasts only the prepared student's ``forward``; this puts the teacher's forward, the loss and
        the fused-linear path (the decoder and the LM-head GEMMs, outside ``forward``) under the same
        autocast, so they all run in its dtype."""
        stack = super().compute_loss_context_manager()
        stack.enter_context(self.accelerator.autocast())
        return stack

    def _planned_steps(self) -> int:
        """Optimizer steps of the run (``max_steps`` or epochs × updates per epoch)."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        if self.train_dataset is None:
            raise ValueError("cannot infer total_steps for the loss without a train_dataset; set max_steps")
        batches = math.ceil(len(self.train_dataset) / self.args.per_device_train_batch_size)
        per_epoch = math.ceil(batches / self.args.gradient_accumulation_steps)
        return max(1, math.ceil(self.args.num_train_epochs * per_epoch))

    def _teacher_logits(self, inputs: dict[str, Any], device: torch.device) -> torch.Tensor:
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(**inputs).logits

    def _hard_loss(self, logits: torch.Tensor, labels: torch.Tensor, mask: Any, n: Any) -> torch.Tensor:
        """Hard-label loss per row (MSE for regression, CE otherwise; [B, T, V] logits of a causal LM
        are flattened to [B·T, V]), summed over valid rows and divided by ``n`` (the valid count)."""
        if self.task == "regression":
            per_row = (logits.float().squeeze(-1) - labels.float()).pow(2)
        else:
            flat = logits.float().reshape(-1, logits.shape[-1])
            per_row = F.cross_entropy(flat, labels.reshape(-1).clamp_min(0), reduction="none")
            per_row = per_row.view(labels.shape)
        return masked_mean(per_row, mask, n)

    def _signals(self, inputs: dict[str, Any], student: torch.Tensor, labels: Any, topk: tuple) -> tuple:
        """(student logits, teacher logits or None, teacher signal for the KD loss, labels, mask)."""
        use_teacher = self.teacher is not None and self.needs_teacher
        teacher = self._teacher_logits(inputs, student.device) if use_teacher else None
        mask = None
        if self.task == "causal_lm":
            if labels is None:
                raise ValueError("causal-LM distillation needs 'labels' (-100 on positions to skip)")
            student, labels = student[:, :-1], labels[:, 1:]
            teacher = teacher[:, :-1] if teacher is not None else None
            topk = tuple(x[:, :-1] if x is not None else None for x in topk)
            mask = labels.ne(-100)
        signal = teacher if self.teacher_signal == "logits" else topk
        if self.uses_kd and (signal is None or (self.teacher_signal == "topk" and topk[0] is None)):
            raise ValueError(
                f"loss {self.args.loss_name!r} needs teacher_topk_* columns in the batch (a teacher cache)"
            )
        return student, teacher, signal, labels, mask

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        args: DistillationArguments = self.args
        if hasattr(self.loss_fn, "training"):
            self.loss_fn.training = model.training
        if args.fused_linear:
            count = inputs["labels"][:, 1:].ne(-100).sum() if "labels" in inputs else torch.tensor(0)
            num_items_in_batch, ranks = global_token_count(args, num_items_in_batch, count, model.training)
            loss = fused_linear_loss(self, model, inputs, num_items_in_batch, ranks)
            return (loss, None) if return_outputs else loss
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        topk = (inputs.pop("teacher_topk_indices", None), inputs.pop("teacher_topk_logprobs", None))
        outputs = model(**inputs)
        student, teacher, signal, labels, mask = self._signals(inputs, outputs.logits, labels, topk)
        # DDP: token means over every rank's tokens; `ranks` undoes DDP's gradient average.
        count = valid_token_count(mask, student)
        num_items_in_batch, ranks = global_token_count(args, num_items_in_batch, count, model.training)
        opts = {"mask": mask, "num_items_in_batch": num_items_in_batch, "temperature": args.temperature}
        parts = {}
        if self.uses_kd:
            parts["kd"] = self.loss_fn(student, signal, backend=args.kd_backend, **opts)
            if args.scale_by_temperature_squared:
                parts["kd"] = parts["kd"] * args.temperature**2
        if args.hard_label_weight > 0:
            if labels is None:
                raise ValueError("hard_label_weight > 0 needs 'labels' in the batch")
            parts["ce"] = self._hard_loss(student, labels, mask, num_items_in_batch)
        if self.sinkhorn_fn is not None:
            parts["sinkhorn"] = self.sinkhorn_fn(student, teacher, backend=args.kd_backend, **opts)
        w = args.hard_label_weight
        loss = (1 - w) * parts.get("kd", 0.0) + w * parts.get("ce", 0.0)
        loss = (loss + args.sinkhorn_weight * parts.get("sinkhorn", 0.0)) * ranks
        if model.training:
            for key, value in parts.items():  # under DDP: this rank's part, times W (its own mean)
                self._sums[key] = self._sums.get(key, 0.0) + value.detach().float() * ranks
        return (loss, outputs) if return_outputs else loss

    def _on_step_end(self) -> None:
        self._steps_since_log += 1
        if hasattr(self.loss_fn, "end_step"):
            self.loss_fn.end_step()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds each loss component's mean since the last log, and the loss's own values (TAID t)."""
        if "loss" in logs:
            steps = max(self._steps_since_log, 1)
            for key, total in self._sums.items():
                logs[f"loss_{key}"] = round(float(total) / steps, 6)
            self._sums, self._steps_since_log = {}, 0
            if hasattr(self.loss_fn, "logs"):
                logs.update(self.loss_fn.logs())
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """HF's ``save_model``; under FSDP with sharded checkpoints, the gathered full weights."""
        state = None if _internal_call else sharded_full_state_dict(self)
        if state is None:
            super().save_model(output_dir, _internal_call)
        else:
            self._save(output_dir or self.args.output_dir, state_dict=state)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if hasattr(self.loss_fn, "state_dict") and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            torch.save(self.loss_fn.state_dict(), os.path.join(folder, LOSS_STATE_NAME))

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_STATE_NAME)
        if hasattr(self.loss_fn, "load_state_dict") and os.path.exists(path):
            self.loss_fn.load_state_dict(torch.load(path, weights_only=True))
