"""``fastkd glue mpdistil`` and ``fastkd superglue mpdistil``: the MPDistil pipeline from the command line.

Registered by ``fastkd.trainer.commands.glue`` and ``fastkd.trainer.commands.superglue`` through
``add_mpdistil_command``. Under ``superglue``
the task names are SuperGLUE's (``rte`` = SuperGLUE RTE, jsonl); under ``glue`` any registry name works
(GLUE names, the SuperGLUE ones, ``superglue_rte``).
"""

from __future__ import annotations

import argparse
from typing import Any


def layer_list(text: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]`` (argparse type of ``--pkd-layers``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}") from err


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_mpdistil(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="main task")
    p.add_argument(
        "--teacher",
        required=True,
        help="teacher checkpoint (fine-tuned in phase 1 unless --teacher-finetuned)",
    )
    p.add_argument("--output", required=True, help="output directory (phases, summary.json, summary.md)")
    p.add_argument("--student-layers", type=int, required=True, help="student = the first K layers")
    p.add_argument("--student-from", help="take the student's layers from this model (default: --teacher)")
    p.add_argument("--even-layers", action="store_true", help="evenly spaced layers instead of the first K")
    p.add_argument("--teacher-finetuned", action="store_true", help="the teacher is fine-tuned: skip phase 1")
    p.add_argument("--data-dir", help="GLUE TSV / SuperGLUE jsonl root or task folder; default: HF datasets")
    p.add_argument(
        "--curriculum-tasks", type=_names, help="comma-separated task pool (default: the main task)"
    )
    p.add_argument(
        "--meta-loss",
        choices=("collaborative", "competitive"),
        default="collaborative",
        help="phase-3 meta-teacher objective (default collaborative)",
    )
    p.add_argument(
        "--reward", choices=("binary", "real"), default="binary", help="curriculum reward (default binary)"
    )
    p.add_argument("--episodes", type=int, default=200, help="curriculum episodes (default 200)")
    p.add_argument("--epochs", type=int, default=10, help="student epochs = phase 2/3 rounds (default 10)")
    p.add_argument("--teacher-epochs", type=int, default=10, help="phase-1 teacher epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of every phase (default 8)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example (default 128)")
    p.add_argument("--quiz-fraction", type=float, default=0.1, help="share of train held out as quiz")
    p.add_argument("--teacher-lr", type=float, default=2e-5, help="teacher learning rate (default 2e-5)")
    p.add_argument("--learning-rate", type=float, default=3e-5, help="student learning rate")
    p.add_argument("--meta-lr", type=float, default=1e-3, help="T′ head and policy learning rate")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of prob_mse against CE (default 0.5)")
    p.add_argument("--beta", type=float, default=100.0, help="PKD weight")
    p.add_argument("--temperature", type=float, default=5.0, help="τ of prob_mse (default 5)")
    p.add_argument(
        "--pkd-layers", type=layer_list, help="teacher layers for student layers 1..K-1 (default 1..K-1)"
    )
    p.add_argument("--gamma", type=float, default=0.99, help="REINFORCE discount (default 0.99)")
    p.add_argument("--detach-state", action="store_true", help="fix: no policy gradient into the student")
    p.add_argument(
        "--step-every-batch", action="store_true", help="fix: student steps every curriculum batch"
    )
    p.add_argument("--relative-discount", action="store_true", help="fix: γ^(j-t) instead of γ^j")
    p.add_argument("--fix-quirks", action="store_true", help="all three fixes")
    p.add_argument("--max-train-samples", type=int, help="use only the first N train examples")
    p.add_argument("--max-eval-samples", type=int, help="use only the first N dev examples")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--stop-after", help="stop after this phase (teacher, student_no_kd, student_kd, distill)")


def _task_name(a: argparse.Namespace) -> str:
    if a.group != "superglue":
        return a.task
    from fastkd.trainer.superglue.data import registry_key

    return registry_key(a.task)


def run(a: argparse.Namespace) -> None:
    """Build the ``MPDistilConfig`` of the parsed arguments and run it; prints the summary table."""
    from fastkd.trainer.mpdistil.config import MPDistilConfig
    from fastkd.trainer.mpdistil.run import run_mpdistil

    fix = a.fix_quirks
    config = MPDistilConfig(
        task=_task_name(a),
        teacher=a.teacher,
        output=a.output,
        student_layers=a.student_layers,
        student_from=a.student_from,
        first_layers=not a.even_layers,
        teacher_finetuned=a.teacher_finetuned,
        data_dir=a.data_dir,
        curriculum_tasks=a.curriculum_tasks,
        meta_loss=a.meta_loss,
        reward=a.reward,
        episodes=a.episodes,
        epochs=a.epochs,
        teacher_epochs=a.teacher_epochs,
        batch_size=a.batch_size,
        max_length=a.max_length,
        quiz_fraction=a.quiz_fraction,
        teacher_lr=a.teacher_lr,
        student_lr=a.learning_rate,
        meta_lr=a.meta_lr,
        alpha=a.alpha,
        beta=a.beta,
        temperature=a.temperature,
        pkd_layers=a.pkd_layers,
        gamma=a.gamma,
        detach_state=a.detach_state or fix,
        step_every_batch=a.step_every_batch or fix,
        relative_discount=a.relative_discount or fix,
        max_train_samples=a.max_train_samples,
        max_eval_samples=a.max_eval_samples,
        seed=a.seed,
        stop_after=a.stop_after,
    )
    print(run_mpdistil(config))


TEXT = "MPDistil: teacher, meta-teacher, student distillation and curriculum (ICLR 2024)"


def add_mpdistil_command(commands: Any) -> None:
    """Add the ``mpdistil`` sub-command to a command group's sub-parsers (``glue`` or ``superglue``)."""
    from fastkd.trainer.commands.common import set_handler

    p = commands.add_parser("mpdistil", help=TEXT)
    _add_mpdistil(p)
    set_handler(p, run)
