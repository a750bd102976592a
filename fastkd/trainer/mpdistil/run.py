"""The MPDistil pipeline, resumable phase by phase (``config.PHASES``).

1. ``teacher``: fine-tune the teacher with CE (or take it as given with ``teacher_finetuned``).
2. ``student_no_kd`` and ``student_kd``: the baselines, CE only, and α·prob_mse(T, S) + (1 − α)·CE.
3. ``distill``: phases 2 and 3 alternating once per epoch: the student learns from T′ with
   α·prob_mse(T′, S) + (1 − α)·CE + β·PKD, then T′ (the teacher with a frozen encoder) learns on the quiz
   split with the collaborative or competitive loss. The best student and the best T′ on dev are kept.
4. ``curriculum``: the REINFORCE curriculum over ``curriculum_tasks`` from the best phase-3 student.

Each phase writes ``<output>/<phase>/result.json`` (and its models) when done; a rerun with the same
settings loads finished phases instead of repeating them. Data: the quiz split is a seeded
``quiz_fraction`` (default 0.1) of the train split (the released code reads its own ``held.tsv``); the
rest of train is for training; dev is for model selection. The student is the first ``student_layers``
layers of ``student_from`` (default: the teacher checkpoint as given, before fine-tuning), as the released
code builds its 6-layer BERT from bert-base (``first_layers=False``: evenly spaced layers).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from fastkd.trainer.models import shrink_layers
from fastkd.trainer.mpdistil.config import (
    PHASES,
    MPDistilConfig,
    first_affected_phase,
    main_task,
    pool_tasks,
    validate,
)
from fastkd.trainer.mpdistil.curriculum import run_curriculum
from fastkd.trainer.mpdistil.data import load_data
from fastkd.trainer.mpdistil.model import TaskModel, load_classifier
from fastkd.trainer.mpdistil.phases import (
    Best,
    adamw,
    evaluate,
    fit,
    meta_epoch,
    meta_teacher,
    train_epoch,
)
from fastkd.trainer.summary import write_summary


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _task_model(path: str, c: MPDistilConfig, num_labels: int | None) -> TaskModel:
    extra = {name: t.num_labels for name, t in pool_tasks(c).items()}
    torch.manual_seed(c.seed)
    return TaskModel(load_classifier(path, num_labels), main_task(c).name, extra).to(_device())


class Phases:
    """Runs (or resumes) each phase of ``config`` and collects the summary rows."""

    def __init__(self, config: MPDistilConfig) -> None:
        from transformers import AutoTokenizer

        validate(config)
        self.c, self.task = config, main_task(config)
        self._check_resume()
        self.tokenizer = AutoTokenizer.from_pretrained(config.teacher)
        self.data = load_data(config, self.tokenizer)
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}

    def _check_resume(self) -> None:
        os.makedirs(self.c.output, exist_ok=True)
        path = os.path.join(self.c.output, "config.json")
        settings = json.loads(json.dumps(self.c.settings()))
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            changed = {k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k)}
            first = first_affected_phase(changed)
            done = [p for p in PHASES[PHASES.index(first) :] if self._done(p)] if first else []
            if done:
                raise ValueError(
                    f"{self.c.output} holds finished phases ({', '.join(done)}) run with other settings "
                    f"({', '.join(sorted(changed))}); use a new --output, the same settings, or delete "
                    "those phase folders"
                )
        with open(path, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2)

    def _done(self, phase: str) -> bool:
        return os.path.exists(os.path.join(self.dir(phase), "result.json"))

    def dir(self, name: str) -> str:
        return os.path.join(self.c.output, name)

    def eval(self, model: TaskModel) -> dict[str, float]:
        return evaluate(model, self.task.name, self.data.dev, self.data.dev_groups)

    def phase(self, name: str, run: Callable[[], dict], load: Callable[[], None]) -> dict[str, Any]:
        """``run()`` the phase and record its result, or ``load()`` it when its result.json exists."""
        path = os.path.join(self.dir(name), "result.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
            load()
            print(f"[mpdistil] phase {name}: resumed from {self.dir(name)}", flush=True)
        else:
            print(f"[mpdistil] phase {name}: running", flush=True)
            start = time.perf_counter()
            result = run()
            result["wall_time_s"] = round(time.perf_counter() - start, 3)
            os.makedirs(self.dir(name), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
        self.results[name] = result
        return result

    def row(self, run: str, model: str, loss: str, result: dict[str, Any], key: str = "metrics") -> None:
        self.rows.append(
            {
                "run": run,
                "model": model,
                "loss": loss,
                "metrics": result[key],
                "wall_time_s": result["wall_time_s"],
            }
        )

    def save(self, model: TaskModel, name: str) -> None:
        model.save(self.dir(name), self.tokenizer)

    def load(self, model: TaskModel, name: str) -> None:
        model.model.load_state_dict(load_classifier(self.dir(name), None).state_dict())
        model.load_heads(self.dir(name))

    def teacher(self) -> TaskModel:
        c = self.c
        teacher = _task_model(c.teacher, c, None if c.teacher_finetuned else self.task.num_labels)
        base = teacher if c.student_from is None else _task_model(c.student_from, c, self.task.num_labels)
        student = copy.deepcopy(base)
        student.model = shrink_layers(base.model, c.student_layers, first=c.first_layers)
        self.student_init = student

        def run() -> dict[str, Any]:
            if c.teacher_finetuned or c.teacher_epochs == 0:
                result = {"metrics": self.eval(teacher), "fine_tuned": False}
            else:
                opt = adamw(teacher, c.teacher_lr)
                epoch = lambda e: train_epoch(teacher, self.data.train, opt, desc=f"teacher epoch {e}")
                result = fit(teacher, c.teacher_epochs, epoch, lambda: self.eval(teacher), self.task.name)
            self.save(teacher, "teacher")
            return result

        result = self.phase("teacher", run, lambda: self.load(teacher, "teacher"))
        self.row("teacher", c.teacher, "cross_entropy", result)
        return teacher

    def student(self, name: str, teacher: TaskModel | None, alpha: float, beta: float) -> TaskModel:
        c, student = self.c, copy.deepcopy(self.student_init)

        def run() -> dict[str, Any]:
            opt = adamw(student, c.student_lr)

            def epoch(e: int) -> float:
                args = (teacher, alpha, beta, c.temperature, self.pkd_layers)
                return train_epoch(student, self.data.train, opt, *args, desc=f"{name} epoch {e}")

            result = fit(student, c.epochs, epoch, lambda: self.eval(student), self.task.name)
            self.save(student, name)
            return result

        result = self.phase(name, run, lambda: self.load(student, name))
        loss = "cross_entropy" if teacher is None else f"{alpha}·prob_mse + {1 - alpha:g}·CE"
        self.row(name, f"{c.student_layers}-layer student", loss, result)
        return student

    @property
    def pkd_layers(self) -> list[int]:
        return self.c.pkd_layers or list(range(1, self.c.student_layers))

    def distill(self, teacher: TaskModel) -> tuple[TaskModel, TaskModel]:
        c, student, meta = self.c, copy.deepcopy(self.student_init), meta_teacher(teacher)

        def run() -> dict[str, Any]:
            s_opt, m_opt = adamw(student, c.student_lr), adamw(meta, c.meta_lr)
            best = {"student": Best(self.task.name), "meta_teacher": Best(self.task.name)}
            for e in range(c.epochs):
                args = (meta, c.alpha, c.beta, c.temperature, self.pkd_layers)
                s_loss = train_epoch(student, self.data.train, s_opt, *args, desc=f"phase 2 epoch {e}")
                best["student"].update(student, {"epoch": e, "loss": s_loss, "metrics": self.eval(student)})
                m_loss = meta_epoch(
                    meta, teacher, student, self.data.quiz, m_opt, c.meta_loss, desc=f"phase 3 epoch {e}"
                )
                best["meta_teacher"].update(meta, {"epoch": e, "loss": m_loss, "metrics": self.eval(meta)})
            result = {"student": best["student"].restore(student)}
            result["meta_teacher"] = best["meta_teacher"].restore(meta)
            self.save(student, "distill/student")
            self.save(meta, "distill/meta_teacher")
            return result

        def load() -> None:
            self.load(student, "distill/student")
            self.load(meta, "distill/meta_teacher")

        result = self.phase("distill", run, load)
        result = {**result, "student": {**result["student"], "wall_time_s": result["wall_time_s"]}}
        result["meta_teacher"]["wall_time_s"] = result["wall_time_s"]
        self.row("meta_teacher", "T′ (frozen encoder)", f"{c.meta_loss} meta loss", result["meta_teacher"])
        self.row(
            "student_pkd", "MPDistil without curriculum", "0.5·prob_mse(T′) + CE + β·PKD", result["student"]
        )
        return student, meta

    def curriculum(self, student: TaskModel, meta: TaskModel) -> TaskModel:
        c, final = self.c, copy.deepcopy(student)

        def run() -> dict[str, Any]:
            d = self.data
            result = run_curriculum(final, meta, d.quiz_batches, d.dev, c.curriculum(), c.seed, d.dev_groups)
            self.save(final, "curriculum")
            return result

        result = self.phase("curriculum", run, lambda: self.load(final, "curriculum"))
        self.row("mpdistil", f"{c.student_layers}-layer student", f"curriculum ({c.reward} reward)", result)
        return final

    def write(self) -> str:
        summary = {
            "task": self.task.name,
            "config": self.c.settings(),
            "phases": self.results,
            "rows": self.rows,
        }
        return write_summary(self.c.output, summary, self.rows)


def run_mpdistil(config: MPDistilConfig) -> str:
    """Run (or resume) every phase up to ``config.stop_after``; returns the summary table (markdown)."""
    p = Phases(config)
    stop = PHASES.index(config.stop_after) if config.stop_after else len(PHASES) - 1
    teacher = p.teacher()
    steps: list[Callable[[], Any]] = [
        lambda: p.student("student_no_kd", None, 0.0, 0.0),
        lambda: p.student("student_kd", teacher, config.alpha, 0.0),
        lambda: p.distill(teacher),
    ]
    for index, step in enumerate(steps, start=1):
        p.write()
        if index > stop:
            return p.write()
        out = step()
    if stop == len(PHASES) - 1:
        p.curriculum(*out)
    return p.write()
