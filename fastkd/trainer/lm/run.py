"""``fastkd lm distill``: causal-LM distillation from a live teacher or from a teacher cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForCausalLM, set_seed

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.interrupt import interruptible_train, remove_checkpoints, resume_point
from fastkd.trainer.lm.cache import cache_tokenizer_path, load_cache
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.losses import loss_entry
from fastkd.trainer.models import shrink_layers
from fastkd.trainer.preflight import first_line, precision_arguments
from fastkd.trainer.summary import write_summary
from fastkd.trainer.trainer import DistillationTrainer, check_compatible, load_teacher
from fastkd.trainer.vocab import (
    check_cache_vocabulary,
    check_student_tokenizer,
    has_tokenizer,
    load_tokenizer,
    vocabulary,
)


@dataclass
class LMJob:
    """A causal-LM distillation run (see ``fastkd lm distill --help``)."""

    output: str
    student: str | None = None
    student_layers: int | None = None
    teacher: str | None = None
    teacher_cache: str | None = None
    teacher_dtype: str = "fp32"  # the live teacher's weights: "fp32", "bf16" or "fp16"
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
    save_steps: int = 500
    resume: str = "auto"  # "auto" (latest checkpoint in output), "never" or a checkpoint folder
    fsdp: bool = False  # FSDP2 for the student (HF's fsdp=True, fsdp_config version 2)
    precision: str = "fp32"  # "bf16" / "fp16": autocast mixed precision, fp32 master weights
    extra_args: dict[str, Any] = field(default_factory=dict)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i]


def _student_model(path: str) -> Any:
    try:
        return AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load student {path!r}: {first_line(err)}") from None


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _models(job: LMJob) -> tuple[Any, Any]:
    """(student, teacher or None); the teacher in ``job.teacher_dtype``, the student in fp32 (cut from
    an fp32 copy of the teacher with ``student_layers``, never from a rounded one)."""
    if (job.student is None) == (job.student_layers is None):
        raise ValueError("give exactly one of --student PATH and --student-layers K")
    if job.teacher_dtype not in _DTYPES:
        raise ValueError(f"--teacher-dtype must be one of {list(_DTYPES)}, got {job.teacher_dtype!r}")
    dtype = _DTYPES[job.teacher_dtype]
    teacher = load_teacher(job.teacher, "causal_lm", dtype=dtype) if job.teacher_cache is None else None
    if job.student is not None:
        student = _student_model(job.student)
    elif job.teacher is not None:
        fp32 = teacher if teacher is not None and dtype == torch.float32 else None
        student = shrink_layers(fp32 or load_teacher(job.teacher, "causal_lm"), job.student_layers)
    else:
        raise ValueError("--student-layers needs --teacher (the model whose layers the student keeps)")
    if teacher is not None:
        check_compatible(student, teacher, "causal_lm")
    return student, teacher


def _tokenizer(job: LMJob, meta: dict[str, Any] | None) -> Any:
    """The teacher's tokenizer (from the cache when there is one); the student's, when its folder has
    one, must map tokens to the same ids."""
    if meta is None:
        tokenizer = load_tokenizer(job.teacher, "teacher")
        check_student_tokenizer(tokenizer, job.student)
        return tokenizer
    if job.student is not None and has_tokenizer(job.student):
        student = vocabulary(load_tokenizer(job.student, "student"))
        check_cache_vocabulary(meta["vocab_sha256"], student, job.teacher_cache)
    return load_tokenizer(cache_tokenizer_path(job.teacher_cache), "teacher cache")


def _loss(job: LMJob) -> str:
    """The loss name, checked against the teacher signal there is (logits live, top-k from a cache)."""
    loss = job.loss or ("sparse_kl" if job.teacher_cache is not None else "forward_kl")
    wants = loss_entry(loss).teacher
    if job.teacher_cache is not None and wants != "topk":
        raise ValueError(
            f"loss {loss!r} needs the teacher's logits; with --teacher-cache use a top-k loss (sparse_kl)"
        )
    if job.teacher_cache is None and wants == "topk":
        raise ValueError(
            f"loss {loss!r} reads a teacher cache: run `fastkd lm cache-teacher` and pass --teacher-cache"
        )
    return loss


def _read(job: LMJob) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(cache metadata or None, the cached examples or the data's records): read and checked before
    any model is loaded."""
    if job.teacher_cache is None and job.teacher is None:
        raise ValueError("give --teacher PATH (live teacher) or --teacher-cache DIR")
    if job.teacher_cache is not None:
        return load_cache(job.teacher_cache, job.max_samples)
    if job.data is None:
        raise ValueError("give --data FILE (jsonl with prompt/response or text)")
    return None, read_jsonl(job.data, job.max_samples)


def _examples(job: LMJob, student: Any, meta: dict[str, Any] | None, data: list) -> tuple[list, Any]:
    """(examples, tokenizer)."""
    if meta is not None:
        if int(meta["vocab_size"]) != int(student.config.vocab_size):
            raise ValueError(
                f"teacher cache vocabulary ({meta['vocab_size']}) differs from the student's "
                f"({student.config.vocab_size})"
            )
        return data, _tokenizer(job, meta)
    tokenizer = _tokenizer(job, None)
    return encode_all(data, tokenizer, job.max_length), tokenizer


def distill_lm(job: LMJob) -> dict[str, Any]:
    """Train the student; saves it to ``job.output`` with a summary; returns the summary row."""
    loss = _loss(job)
    checkpoint = resume_point(job.output, job.resume)
    meta, data = _read(job)
    set_seed(job.seed)
    student, teacher = _models(job)
    examples, tokenizer = _examples(job, student, meta, data)
    args = DistillationArguments(
        output_dir=job.output,
        learning_rate=job.learning_rate,
        num_train_epochs=job.epochs,
        max_steps=job.max_steps,
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps,
        remove_unused_columns=False,
        save_strategy="steps",
        save_steps=job.save_steps,
        save_total_limit=1,
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
        **({"fsdp": True, "fsdp_config": {"version": 2}} if job.fsdp else {}),
        **precision_arguments(job.precision),
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
    result = interruptible_train(trainer, checkpoint)
    wall = time.perf_counter() - start
    trainer.save_model(job.output)
    tokenizer.save_pretrained(job.output)
    remove_checkpoints(job.output)
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
    summary["fsdp"] = bool(trainer.is_fsdp_enabled)
    summary["precision"] = job.precision
    summary["teacher_dtype"] = job.teacher_dtype if job.teacher_cache is None else None
    print(write_summary(job.output, summary, [row]))
    return row
