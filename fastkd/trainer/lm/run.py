"""``fastkd lm distill``: causal-LM distillation from a live teacher or from a teacher cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.lm.cache import load_cache
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.losses import loss_entry
from fastkd.trainer.models import shrink_layers
from fastkd.trainer.summary import write_summary
from fastkd.trainer.trainer import DistillationTrainer, check_compatible, load_teacher


@dataclass
class LMJob:
    """A causal-LM distillation run (see ``fastkd lm distill --help``)."""

    output: str
    student: str | None = None
    student_layers: int | None = None
    teacher: str | None = None
    teacher_cache: str | None = None
    data: str | None = None
    loss: str | None = None
    loss_options: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    scale_by_temperature_squared: bool = False
    hard_label_weight: float = 0.0
    learning_rate: float = 5e-5
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = -1
    max_length: int = 512
    max_samples: int | None = None
    seed: int = 42
    backend: str = "auto"
    extra_args: dict[str, Any] = field(default_factory=dict)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i]


def _models(job: LMJob) -> tuple[Any, Any, str]:
    """(student, teacher or None, tokenizer path)."""
    if job.teacher_cache is None and job.teacher is None:
        raise ValueError("give --teacher PATH (live teacher) or --teacher-cache DIR")
    if (job.student is None) == (job.student_layers is None):
        raise ValueError("give exactly one of --student PATH and --student-layers K")
    teacher = load_teacher(job.teacher, "causal_lm") if job.teacher_cache is None else None
    if job.student is not None:
        student = AutoModelForCausalLM.from_pretrained(job.student)
    elif job.teacher is not None:
        student = shrink_layers(teacher or load_teacher(job.teacher, "causal_lm"), job.student_layers)
    else:
        raise ValueError("--student-layers needs --teacher (the model whose layers the student keeps)")
    if teacher is not None:
        check_compatible(student, teacher, "causal_lm")
    return student, teacher, job.student or job.teacher


def _examples(job: LMJob, student: Any, tokenizer: Any) -> tuple[list[dict[str, Any]], str]:
    if job.teacher_cache is not None:
        meta, examples = load_cache(job.teacher_cache, job.max_samples)
        if int(meta["vocab_size"]) != int(student.config.vocab_size):
            raise ValueError(
                f"teacher cache vocabulary ({meta['vocab_size']}) differs from the student's "
                f"({student.config.vocab_size})"
            )
        return examples, job.loss or "sparse_kl"
    if job.data is None:
        raise ValueError("give --data FILE (jsonl with prompt/response or text)")
    return encode_all(
        read_jsonl(job.data, job.max_samples), tokenizer, job.max_length
    ), job.loss or "forward_kl"


def distill_lm(job: LMJob) -> dict[str, Any]:
    """Train the student; saves it to ``job.output`` with a summary; returns the summary row."""
    set_seed(job.seed)
    student, teacher, tokenizer_path = _models(job)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    examples, loss = _examples(job, student, tokenizer)
    wants = loss_entry(loss).teacher
    if job.teacher_cache is not None and wants != "topk":
        raise ValueError(
            f"loss {loss!r} needs the teacher's logits; with --teacher-cache use a top-k loss (sparse_kl)"
        )
    if job.teacher_cache is None and wants == "topk":
        raise ValueError(
            f"loss {loss!r} reads a teacher cache: run `fastkd lm cache-teacher` and pass --teacher-cache"
        )
    args = DistillationArguments(
        output_dir=job.output,
        learning_rate=job.learning_rate,
        num_train_epochs=job.epochs,
        max_steps=job.max_steps,
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps,
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        seed=job.seed,
        data_seed=job.seed,
        use_cpu=not torch.cuda.is_available(),
        loss_name=loss,
        loss_options=job.loss_options,
        temperature=job.temperature,
        scale_by_temperature_squared=job.scale_by_temperature_squared,
        hard_label_weight=job.hard_label_weight,
        kd_backend=job.backend,
        **job.extra_args,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = DistillationTrainer(
        model=student,
        args=args,
        teacher_model=teacher,
        task="causal_lm",
        train_dataset=_Examples(examples),
        data_collator=LMCollator(pad),
    )
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    trainer.save_model(job.output)
    tokenizer.save_pretrained(job.output)
    tokens = sum(len(e["input_ids"]) for e in examples) * args.num_train_epochs
    row = {
        "run": "student",
        "model": job.student or f"{job.teacher} (K={job.student_layers})",
        "loss": loss,
        "metrics": {"train_loss": float(result.training_loss)},
        "wall_time_s": wall,
        "train_tokens_per_s": tokens / max(result.metrics.get("train_runtime", wall), 1e-9),
    }
    summary = {"teacher": job.teacher, "teacher_cache": job.teacher_cache, "data": job.data, "student": row}
    print(write_summary(job.output, summary, [row]))
    return row
