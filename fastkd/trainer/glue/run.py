"""GLUE jobs: fine-tune a teacher, distill a student, each with evaluation and a summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.glue.data import GlueTask, get_task, load_glue, tokenize
from fastkd.trainer.glue.metrics import MAIN_METRIC, glue_metrics
from fastkd.trainer.glue.presets import PRESETS, TEACHER_PRESET, Preset
from fastkd.trainer.interrupt import interruptible_train, remove_checkpoints, resume_point
from fastkd.trainer.losses import loss_entry
from fastkd.trainer.models import shrink_layers
from fastkd.trainer.preflight import first_line, precision_arguments
from fastkd.trainer.summary import count_tokens, write_summary
from fastkd.trainer.trainer import DistillationTrainer, check_compatible, load_teacher
from fastkd.trainer.vocab import check_student_tokenizer, load_tokenizer


@dataclass
class GlueJob:
    """What every GLUE job shares: data, evaluation, seeds and output."""

    task: str
    output: str
    data_dir: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_length: int = 128
    seed: int = 42
    eval_steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: str = "auto"  # "auto" (latest checkpoint in output), "never" or a checkpoint folder
    quiet: bool = False  # no progress bars and no per-step log lines (the demo)
    precision: str = "fp32"  # "bf16" / "fp16": autocast mixed precision, fp32 master weights
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Resolves ``resume`` to the checkpoint to continue from (None: start afresh), before any work."""
        self.checkpoint = resume_point(self.output, self.resume)


def _training_kwargs(job: GlueJob, task: GlueTask, preset: Preset) -> dict[str, Any]:
    strategy = "steps" if job.eval_steps else "epoch"
    return dict(
        output_dir=job.output,
        learning_rate=preset.learning_rate,
        num_train_epochs=preset.epochs,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=max(preset.batch_size, 32),
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=job.eval_steps,
        save_steps=job.eval_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{task.eval_splits[0]}_{MAIN_METRIC[task.name]}",
        greater_is_better=True,
        logging_steps=max(1, job.eval_steps or 10),
        disable_tqdm=True if job.quiet else None,
        seed=job.seed,
        data_seed=job.seed,
        report_to=[],
        use_cpu=not _cuda(),
        **precision_arguments(job.precision),
        **job.extra_args,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _data(job: GlueJob, task: GlueTask, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    train, evals = load_glue(task, job.data_dir, job.max_train_samples, job.max_eval_samples)
    train = tokenize(train, tokenizer, job.max_length)
    return train, {name: tokenize(ds, tokenizer, job.max_length) for name, ds in evals.items()}


_NOT_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")


def _run(
    job: GlueJob, trainer: Trainer, evals: dict[str, Any], train: Any, role: str, model: str, loss: str
) -> dict[str, Any]:
    """Train (from ``job.checkpoint`` when resuming), evaluate on every dev split: the summary row."""
    if job.quiet:
        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = interruptible_train(trainer, job.checkpoint)
    wall = time.perf_counter() - start
    metrics = {}
    for split, ds in evals.items():
        for key, value in trainer.evaluate(ds, metric_key_prefix=split).items():
            name = key[len(split) + 1 :]
            if key.startswith(split + "_") and name not in _NOT_METRICS:
                metrics[name if len(evals) == 1 else f"{split}_{name}"] = value
    tokens = count_tokens(train) * trainer.args.num_train_epochs
    return {
        "run": role,
        "model": model,
        "loss": loss,
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "wall_time_s": wall,
        "train_tokens_per_s": tokens / max(result.metrics.get("train_runtime", wall), 1e-9),
        "train_loss": result.training_loss,
    }


def _compute_metrics(task: GlueTask):
    def compute(pred: Any) -> dict[str, float]:
        return glue_metrics(task.name, pred.predictions, pred.label_ids)

    return compute


def _save(trainer: Trainer, tokenizer: Any, output: str) -> None:
    """The final (best-dev) model and its tokenizer; the checkpoints (optimizer states) are removed."""
    trainer.save_model(output)
    tokenizer.save_pretrained(output)
    remove_checkpoints(output)


def finetune_teacher(job: GlueJob, model: str) -> dict[str, Any]:
    """Fine-tune ``model`` on the task with the hard labels; saves the best-dev model to ``job.output``."""
    task = get_task(job.task)
    set_seed(job.seed)
    tokenizer = load_tokenizer(model, "model")
    train, evals = _data(job, task, tokenizer)
    net = _classifier(model, task)
    preset = TEACHER_PRESET.override(**job.overrides)
    args = TrainingArguments(**_training_kwargs(job, task, preset))
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics(task),
    )
    row = _run(
        job, trainer, evals, train, "teacher", model, "cross_entropy" if task.num_labels > 1 else "mse"
    )
    _save(trainer, tokenizer, job.output)
    write_summary(job.output, {"task": task.name, "precision": job.precision, "teacher": row}, [row])
    return row


@dataclass
class DistillSpec:
    """The student and the objective of a distillation run."""

    teacher: str
    student: str | None = None
    student_layers: int | None = None
    student_from: str | None = None
    loss: str | None = None
    loss_options: dict[str, Any] = field(default_factory=dict)
    hard_label_weight: float = 0.0
    scale_by_temperature_squared: bool = False
    use_sinkhorn: bool = False
    backend: str = "auto"
    pkd_weight: float = 0.0  # > 0: add β·PKD (fastkd.trainer.mpdistil.pkd_trainer)
    pkd_layers: list[int] | None = None


def _classifier(name_or_path: str, task: GlueTask) -> Any:
    """A sequence classifier with the task's label count (a new head when the checkpoint's differs)."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=task.num_labels, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load model {name_or_path!r}: {first_line(err)}") from None


def _student(spec: DistillSpec, task: GlueTask, teacher: Any) -> Any:
    if spec.student is not None:
        return _classifier(spec.student, task)
    base = teacher if spec.student_from is None else _classifier(spec.student_from, task)
    return shrink_layers(base, spec.student_layers)


def distill(job: GlueJob, spec: DistillSpec) -> dict[str, Any]:
    """Distill the fine-tuned ``spec.teacher`` into a student on the task; saves the best-dev student."""
    task = get_task(job.task)
    if (spec.student is None) == (spec.student_layers is None):
        raise ValueError("give exactly one of --student PATH and --student-layers K")
    loss = spec.loss or ("mse" if task.is_regression else "forward_kl")
    if loss == "pkd":
        raise ValueError("'pkd' is a term on hidden states, not a logit loss: add it with --pkd-weight")
    loss_entry(loss)
    set_seed(job.seed)
    teacher = load_teacher(spec.teacher, "classification")
    if teacher.config.num_labels != task.num_labels:
        raise ValueError(
            f"teacher {spec.teacher!r} has {teacher.config.num_labels} labels, "
            f"task {task.name} has {task.num_labels}"
        )
    tokenizer = load_tokenizer(spec.teacher, "teacher")
    check_student_tokenizer(tokenizer, spec.student or spec.student_from)
    student = _student(spec, task, teacher)
    check_compatible(student, teacher, "classification")
    train, evals = _data(job, task, tokenizer)
    preset = PRESETS[task.name].override(**job.overrides)
    args = DistillationArguments(
        **_training_kwargs(job, task, preset),
        loss_name=loss,
        loss_options=spec.loss_options,
        temperature=preset.temperature,
        scale_by_temperature_squared=spec.scale_by_temperature_squared,
        hard_label_weight=spec.hard_label_weight,
        sinkhorn_weight=preset.sinkhorn_weight if spec.use_sinkhorn else 0.0,
        kd_backend=spec.backend,
    )
    extra: dict[str, Any] = {}
    trainer_class = DistillationTrainer
    if spec.pkd_weight:
        from fastkd.trainer.mpdistil.pkd_trainer import PKDDistillationTrainer

        trainer_class = PKDDistillationTrainer
        extra = {"pkd_weight": spec.pkd_weight, "pkd_layers": spec.pkd_layers}
    trainer = trainer_class(
        **extra,
        model=student,
        args=args,
        teacher_model=teacher,
        task="regression" if task.is_regression else "classification",
        train_dataset=train,
        eval_dataset=evals,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics(task),
    )
    name = spec.student or f"{spec.student_from or spec.teacher} (K={spec.student_layers})"
    row = _run(job, trainer, evals, train, "student", name, loss)
    _save(trainer, tokenizer, job.output)
    summary = {"task": task.name, "teacher": spec.teacher, "preset": vars(preset), "student": row}
    summary["precision"] = job.precision
    write_summary(job.output, summary, [row])
    return row
