"""``fastkd glue {finetune-teacher,distill,demo}``."""

from __future__ import annotations

import argparse
from typing import Any

from fastkd.trainer.commands.common import add_run_options, json_object, positive_int, set_handler
from fastkd.trainer.mpdistil.cli import add_mpdistil_command, layer_list


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli")
    p.add_argument("--output", required=True, help="output directory (model, summary.json, summary.md)")
    p.add_argument(
        "--data-dir", help="GLUE TSV files (the task's folder or the GLUE root); default: HF datasets"
    )
    p.add_argument("--max-train-samples", type=positive_int, help="use only the first N train examples")
    p.add_argument("--max-eval-samples", type=positive_int, help="use only the first N dev examples")
    p.add_argument("--max-length", type=positive_int, default=128, help="tokens per example (default 128)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--eval-steps", type=positive_int, help="evaluate (and checkpoint) every N steps; default each epoch"
    )
    p.add_argument("--learning-rate", type=float, help="override the preset")
    p.add_argument("--epochs", type=float, help="override the preset")
    p.add_argument("--batch-size", type=positive_int, help="override the preset")


def register(groups: Any) -> None:
    glue = groups.add_parser("glue", help="GLUE teacher fine-tuning and distillation")
    commands = glue.add_subparsers(dest="command", required=True)
    p = commands.add_parser("finetune-teacher", help="fine-tune a teacher on a GLUE task")
    _common(p)
    p.add_argument("--model", required=True, help="pretrained model folder or HF hub name")
    add_run_options(p, backend=False)
    set_handler(p, finetune_teacher)
    p = commands.add_parser("distill", help="distill a fine-tuned teacher into a student")
    _common(p)
    p.add_argument("--teacher", required=True, help="fine-tuned teacher directory")
    p.add_argument("--student", help="student model folder or HF hub name")
    p.add_argument(
        "--student-layers", type=positive_int, help="student = K evenly spaced layers of the teacher"
    )
    p.add_argument("--student-from", help="with --student-layers: take the layers from this model instead")
    p.add_argument("--loss", help="registered loss (default forward_kl; mse for stsb)")
    p.add_argument("--loss-options", type=json_object, default={}, help="JSON, e.g. '{\"beta\": 0.5}'")
    p.add_argument("--temperature", type=float, help="override the preset")
    p.add_argument("--scale-t2", action="store_true", help="multiply the KD term by T²")
    p.add_argument("--hard-label-weight", type=float, help="w in (1-w)·KD + w·CE (default 0: pure KD)")
    p.add_argument("--mix-hard-labels", action="store_true", help="use the preset's alpha: w = 1 - alpha")
    p.add_argument("--sinkhorn", action="store_true", help="add the SinKD term with the preset weight")
    p.add_argument(
        "--sinkhorn-weight", type=float, help="override the preset Sinkhorn weight (implies --sinkhorn)"
    )
    p.add_argument("--pkd-weight", type=float, default=0.0, help="add β·PKD on [CLS] states (MPDistil: 100)")
    p.add_argument(
        "--pkd-layers", type=layer_list, help="teacher layers for student layers 1..K-1 (default 1..K-1)"
    )
    add_run_options(p)
    set_handler(p, distill)
    p = commands.add_parser(
        "demo", help="teacher + student without KD + distilled student on the shipped sample"
    )
    p.add_argument("--output", help="default: <tmp>/fastkd-demo")
    p.add_argument("--tiny", action="store_true", help="use the tiny BERT even when MiniLM is installed")
    p.add_argument("--max-samples", type=positive_int, help="use only the first N train and dev examples")
    p.add_argument("--epochs", type=float, help="override the epochs of the three runs")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_const",
        const="never",
        default="auto",
        help="start over (default: an interrupted demo continues from its checkpoints)",
    )
    set_handler(p, demo)
    add_mpdistil_command(commands)


def _preflight(a: argparse.Namespace, models: dict[str, str | None]) -> None:
    from fastkd.trainer import preflight

    preflight.check_output_dir(a.output)
    if a.data_dir is not None:
        preflight.check_dir(a.data_dir, "--data-dir")
    for flag, name in models.items():
        if name is not None:
            preflight.check_model_source(name, flag, "teacher" if flag == "--teacher" else "model")
    if getattr(a, "backend", None) is not None:
        preflight.check_backend(a.backend)
    preflight.check_precision(a.precision)


def _job(a: argparse.Namespace, **overrides: Any) -> Any:
    from fastkd.trainer.glue.data import get_task
    from fastkd.trainer.glue.run import GlueJob

    get_task(a.task)
    overrides.update(learning_rate=a.learning_rate, epochs=a.epochs, batch_size=a.batch_size)
    return GlueJob(
        a.task,
        a.output,
        a.data_dir,
        a.max_train_samples,
        a.max_eval_samples,
        a.max_length,
        a.seed,
        a.eval_steps,
        overrides,
        resume=a.resume,
        precision=a.precision,
    )


def finetune_teacher(a: argparse.Namespace) -> None:
    from fastkd.trainer.glue.run import finetune_teacher as run
    from fastkd.trainer.summary import markdown_table

    job = _job(a)
    _preflight(a, {"--model": a.model})
    print(markdown_table([run(job, a.model)]))


def distill(a: argparse.Namespace) -> None:
    from fastkd.trainer import preflight
    from fastkd.trainer.glue.data import get_task
    from fastkd.trainer.glue.presets import PRESETS
    from fastkd.trainer.glue.run import DistillSpec
    from fastkd.trainer.glue.run import distill as run
    from fastkd.trainer.summary import markdown_table

    job = _job(a, temperature=a.temperature, sinkhorn_weight=a.sinkhorn_weight)
    _preflight(a, {"--teacher": a.teacher, "--student": a.student, "--student-from": a.student_from})
    preflight.check_objective(a.temperature, a.hard_label_weight, a.sinkhorn_weight)
    weight = a.hard_label_weight
    if a.mix_hard_labels and weight is None:
        weight = 1.0 - PRESETS[get_task(a.task).name].alpha
    spec = DistillSpec(
        a.teacher,
        a.student,
        a.student_layers,
        a.student_from,
        a.loss,
        a.loss_options,
        weight or 0.0,
        a.scale_t2,
        a.sinkhorn or a.sinkhorn_weight is not None,
        a.backend,
        a.pkd_weight,
        a.pkd_layers,
    )
    print(markdown_table([run(job, spec)]))


def demo(a: argparse.Namespace) -> None:
    from fastkd.trainer import preflight
    from fastkd.trainer.glue.demo import run_demo

    if a.output is not None:
        preflight.check_output_dir(a.output)
    run_demo(a.output, a.tiny, a.seed, a.max_samples, a.epochs, resume=a.resume)
