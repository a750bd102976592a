"""The ``fastkd`` command.

``fastkd glue {finetune-teacher,distill,demo}`` and ``fastkd lm {distill,cache-teacher}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fastkd.trainer.mpdistil.cli import add_parsers as add_mpdistil_parsers
from fastkd.trainer.mpdistil.cli import layer_list


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _glue_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli")
    p.add_argument("--output", required=True, help="output directory (model, summary.json, summary.md)")
    p.add_argument(
        "--data-dir", help="GLUE TSV files (the task's folder or the GLUE root); default: HF datasets"
    )
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--eval-steps", type=int, help="evaluate (and checkpoint) every N steps; default each epoch"
    )
    p.add_argument("--learning-rate", type=float, help="override the preset")
    p.add_argument("--epochs", type=float, help="override the preset")
    p.add_argument("--batch-size", type=int, help="override the preset")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastkd", description="Knowledge-distillation jobs with fastkd losses."
    )
    groups = parser.add_subparsers(dest="group", required=True)
    glue = groups.add_parser("glue", help="GLUE teacher fine-tuning and distillation").add_subparsers(
        dest="command", required=True
    )
    p = glue.add_parser("finetune-teacher", help="fine-tune a teacher on a GLUE task")
    _glue_common(p)
    p.add_argument("--model", required=True, help="pretrained model name or path")
    p = glue.add_parser("distill", help="distill a fine-tuned teacher into a student")
    _glue_common(p)
    p.add_argument("--teacher", required=True, help="fine-tuned teacher directory")
    p.add_argument("--student", help="student model name or path")
    p.add_argument("--student-layers", type=int, help="student = K evenly spaced layers of the teacher")
    p.add_argument("--student-from", help="with --student-layers: take the layers from this model instead")
    p.add_argument("--loss", help="registered loss (default forward_kl; mse for stsb)")
    p.add_argument("--loss-options", type=_json, default={}, help="JSON, e.g. '{\"beta\": 0.5}'")
    p.add_argument("--temperature", type=float, help="override the preset")
    p.add_argument("--scale-t2", action="store_true", help="multiply the KD term by T²")
    p.add_argument("--hard-label-weight", type=float, help="w in (1-w)·KD + w·CE (default 0: pure KD)")
    p.add_argument("--mix-hard-labels", action="store_true", help="use the preset's alpha: w = 1 - alpha")
    p.add_argument("--sinkhorn", action="store_true", help="add the SinKD term with the preset weight")
    p.add_argument(
        "--sinkhorn-weight", type=float, help="override the preset Sinkhorn weight (implies --sinkhorn)"
    )
    p.add_argument("--backend", default="auto")
    p.add_argument("--pkd-weight", type=float, default=0.0, help="add β·PKD on [CLS] states (MPDistil: 100)")
    p.add_argument(
        "--pkd-layers", type=layer_list, help="teacher layers for student layers 1..K-1 (default 1..K-1)"
    )
    p = glue.add_parser("demo", help="teacher + student without KD + distilled student on the shipped sample")
    p.add_argument("--output", help="default: <tmp>/fastkd-demo")
    p.add_argument("--tiny", action="store_true", help="use the tiny BERT even when MiniLM is installed")
    p.add_argument("--max-samples", type=int, help="use only the first N train and dev examples")
    p.add_argument("--epochs", type=float, help="override the epochs of the three runs")
    p.add_argument("--seed", type=int, default=42)
    add_mpdistil_parsers(groups, glue)

    lm = groups.add_parser("lm", help="causal-LM distillation").add_subparsers(dest="command", required=True)
    p = lm.add_parser("distill", help="distill a causal LM (live teacher or --teacher-cache)")
    p.add_argument("--output", required=True)
    p.add_argument("--teacher")
    p.add_argument("--teacher-cache", help="directory written by `fastkd lm cache-teacher`")
    p.add_argument("--student")
    p.add_argument("--student-layers", type=int)
    p.add_argument("--data", help="jsonl: {prompt, response} (response-only loss) or {text}")
    p.add_argument("--loss", help="default forward_kl (live) or sparse_kl (cache)")
    p.add_argument("--loss-options", type=_json, default={})
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--scale-t2", action="store_true")
    p.add_argument("--hard-label-weight", type=float, default=0.0)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--max-samples", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", default="auto")
    p = lm.add_parser("cache-teacher", help="write the teacher's top-k log-probs to safetensors shards")
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--top-k", type=int, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=1024, help="examples per shard")
    p.add_argument("--max-samples", type=int)
    return parser


def _glue_job(a: argparse.Namespace, **overrides: Any) -> Any:
    from fastkd.trainer.glue.run import GlueJob

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
    )


def _glue(a: argparse.Namespace) -> None:
    from fastkd.trainer.glue.data import get_task
    from fastkd.trainer.glue.presets import PRESETS
    from fastkd.trainer.glue.run import DistillSpec, distill, finetune_teacher
    from fastkd.trainer.summary import markdown_table

    if a.command == "demo":
        from fastkd.trainer.glue.demo import run_demo

        run_demo(a.output, a.tiny, a.seed, a.max_samples, a.epochs)
        return
    task = get_task(a.task)
    if a.command == "finetune-teacher":
        print(markdown_table([finetune_teacher(_glue_job(a), a.model)]))
        return
    weight = a.hard_label_weight
    if a.mix_hard_labels:
        weight = 1.0 - PRESETS[task.name].alpha if weight is None else weight
    job = _glue_job(a, temperature=a.temperature, sinkhorn_weight=a.sinkhorn_weight)
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
    print(markdown_table([distill(job, spec)]))


def _lm(a: argparse.Namespace) -> None:
    if a.command == "cache-teacher":
        from fastkd.trainer.lm.cache import cache_teacher

        meta = cache_teacher(
            a.teacher,
            a.data,
            a.top_k,
            a.output,
            max_length=a.max_length,
            batch_size=a.batch_size,
            shard_size=a.shard_size,
            max_samples=a.max_samples,
            temperature=a.temperature,
        )
        print(json.dumps(meta, indent=2))
        return
    from fastkd.trainer.lm.run import LMJob, distill_lm

    distill_lm(
        LMJob(
            a.output,
            a.student,
            a.student_layers,
            a.teacher,
            a.teacher_cache,
            a.data,
            a.loss,
            a.loss_options,
            a.temperature,
            a.scale_t2,
            a.hard_label_weight,
            a.learning_rate,
            a.epochs,
            a.batch_size,
            a.gradient_accumulation_steps,
            a.max_steps,
            a.max_length,
            a.max_samples,
            a.seed,
            a.backend,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastkd`` script; bad input exits with status 2 and a one-line message."""
    args = _build_parser().parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or (_glue if args.group == "glue" else _lm)
        handler(args)
    except (ValueError, TypeError) as err:
        print(f"fastkd: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
