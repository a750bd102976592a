"""The data of an MPDistil run: the main task's train part, quiz split and dev loaders, and the quiz
batches of every curriculum task (each task's quiz is carved from its own train split the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastkd.trainer.glue.data import GlueTask, load_split, tokenize
from fastkd.trainer.mpdistil.config import MPDistilConfig, main_task, pool_tasks
from fastkd.trainer.mpdistil.phases import make_loader, split_quiz


@dataclass
class Data:
    """Loaders of the main task (train part, quiz, dev), the dev question ids (MultiRC) and every pool
    task's quiz batches."""

    train: Any
    quiz: Any
    dev: Any
    dev_groups: Any
    quiz_batches: dict[str, list[dict]]


def _tokenized(task: GlueTask, split: str, c: MPDistilConfig, tokenizer: Any, limit: int | None) -> Any:
    ds = load_split(task, split, c.data_dir, limit)
    groups = ds["group"] if "group" in ds.column_names else None
    return tokenize(
        ds.remove_columns([x for x in ds.column_names if x == "group"]), tokenizer, c.max_length
    ), groups


def load_data(c: MPDistilConfig, tokenizer: Any) -> Data:
    """Tokenized loaders (train shuffled with the run's seed, dev in order) and quiz batches."""
    main = main_task(c)
    train, _ = _tokenized(main, "train", c, tokenizer, c.max_train_samples)
    dev, groups = _tokenized(main, main.eval_splits[0], c, tokenizer, c.max_eval_samples)
    train, quiz = split_quiz(train, c.quiz_fraction, c.seed)
    quiz_batches = {}
    for name, task in pool_tasks(c).items():
        if task is main:
            task_quiz = quiz
        else:
            task_train = _tokenized(task, "train", c, tokenizer, c.max_train_samples)[0]
            task_quiz = split_quiz(task_train, c.quiz_fraction, c.seed)[1]
        quiz_batches[name] = list(make_loader(task_quiz, tokenizer, c.batch_size, True, c.seed))
    bs = c.batch_size
    return Data(
        make_loader(train, tokenizer, bs, True, c.seed),
        make_loader(quiz, tokenizer, bs, True, c.seed),
        make_loader(dev, tokenizer, bs, False),
        groups,
        quiz_batches,
    )
