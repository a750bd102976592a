"""``fastkd lm {distill,cache-teacher,verify-cache}``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from fastkd.trainer.commands.common import (
    PRECISIONS,
    add_run_options,
    json_object,
    positive_int,
    set_handler,
)


def _distill_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", required=True, help="output directory (student, tokenizer, summary, checkpoints)"
    )
    p.add_argument("--teacher", help="teacher model folder or HF hub name (live teacher)")
    p.add_argument("--teacher-cache", help="directory written by `fastkd lm cache-teacher` (no live teacher)")
    p.add_argument(
        "--teacher-dtype",
        choices=PRECISIONS,
        default="fp32",
        help="load the live teacher's weights in this dtype (default fp32; bf16 halves its memory, it is "
        "frozen so it needs no fp32 copy); the student stays fp32",
    )
    p.add_argument("--student", help="student model folder or HF hub name")
    p.add_argument(
        "--student-layers", type=positive_int, help="student = K evenly spaced layers of --teacher"
    )
    p.add_argument("--data", help="jsonl: {prompt, response} (loss on the response only) or {text}")
    p.add_argument("--loss", help="registered loss; default forward_kl (live teacher) or sparse_kl (cache)")
    p.add_argument("--loss-options", type=json_object, default={}, help="JSON, e.g. '{\"beta\": 0.5}'")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature T (default 1)")
    p.add_argument("--scale-t2", action="store_true", help="multiply the KD term by T²")
    p.add_argument(
        "--hard-label-weight", type=float, default=0.0, help="w in (1-w)·KD + w·CE (default 0: pure KD)"
    )
    p.add_argument("--learning-rate", type=float, default=5e-5, help="default 5e-5")
    p.add_argument("--epochs", type=float, default=1.0, help="default 1")
    p.add_argument(
        "--max-steps", type=int, default=-1, help="stop after N optimizer steps (overrides --epochs)"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="examples per micro-batch (default 8)")
    p.add_argument(
        "--gradient-accumulation-steps",
        type=positive_int,
        default=1,
        help="micro-batches per step (default 1)",
    )
    p.add_argument("--max-length", type=positive_int, default=512, help="tokens per example (default 512)")
    p.add_argument("--max-samples", type=positive_int, help="use only the first N examples")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--save-steps", type=positive_int, default=500, help="checkpoint every N steps (default 500)"
    )
    p.add_argument(
        "--fused-linear",
        action="store_true",
        help="loss from hidden states + lm_head weights: the [tokens, vocab] logits are never formed",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="shard the student with FSDP2 (fully_shard per decoder layer) under torchrun / accelerate; "
        "the teacher is replicated per rank",
    )
    add_run_options(p)


def _cache_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher model folder or HF hub name")
    p.add_argument("--data", required=True, help="jsonl: {prompt, response} or {text}")
    p.add_argument("--top-k", type=positive_int, required=True, help="log-probs kept per token")
    p.add_argument("--output", required=True, help="cache directory (cache.json, shards, tokenizer)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature of the cached log-probs"
    )
    p.add_argument("--max-length", type=positive_int, default=512, help="tokens per example (default 512)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="teacher batch size (default 8)")
    p.add_argument("--shard-size", type=positive_int, default=1024, help="examples per shard (default 1024)")
    p.add_argument("--max-samples", type=positive_int, help="use only the first N examples")


def register(groups: Any) -> None:
    lm = groups.add_parser("lm", help="causal-LM distillation")
    commands = lm.add_subparsers(dest="command", required=True)
    p = commands.add_parser("distill", help="distill a causal LM (live teacher or --teacher-cache)")
    _distill_parser(p)
    set_handler(p, distill)
    p = commands.add_parser("cache-teacher", help="write the teacher's top-k log-probs to safetensors shards")
    _cache_parser(p)
    set_handler(p, cache_teacher)
    p = commands.add_parser(
        "verify-cache", help="check every shard of a teacher cache (sizes, sha256, layout)"
    )
    p.add_argument("directory", help="the cache directory")
    set_handler(p, verify_cache)


def distill(a: argparse.Namespace) -> None:
    from fastkd.trainer import preflight
    from fastkd.trainer.lm.run import LMJob, distill_lm

    preflight.check_output_dir(a.output)
    for flag, name in (("--teacher", a.teacher), ("--student", a.student)):
        if name is not None:
            preflight.check_model_source(name, flag, flag[2:])
    if a.teacher_cache is not None:
        preflight.check_dir(a.teacher_cache, "--teacher-cache")
    if a.data is not None:
        preflight.check_file(a.data, "--data")
    preflight.check_backend(a.backend)
    preflight.check_objective(a.temperature, a.hard_label_weight, None)
    preflight.check_precision(a.precision)
    if a.fsdp and "LOCAL_RANK" not in os.environ:
        raise ValueError(
            "--fsdp shards the student over the processes of a launcher: "
            "torchrun --nproc-per-node N -m fastkd lm distill ... --fsdp (or accelerate launch)"
        )
    same = {f.name: getattr(a, f.name) for f in dataclasses.fields(LMJob) if hasattr(a, f.name)}
    extra = {"fused_linear": True} if a.fused_linear else {}
    distill_lm(LMJob(**same, scale_by_temperature_squared=a.scale_t2, extra_args=extra))


def cache_teacher(a: argparse.Namespace) -> None:
    from fastkd.trainer import preflight
    from fastkd.trainer.lm.cache import cache_teacher as run

    preflight.check_output_dir(a.output)
    preflight.check_model_source(a.teacher, "--teacher", "teacher")
    preflight.check_file(a.data, "--data")
    meta = run(
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


def verify_cache(a: argparse.Namespace) -> None:
    from fastkd.trainer.lm.cache_check import verify_cache as run

    meta = run(a.directory)
    shards = len(meta["shards"])
    print(f"{a.directory}: ok ({meta['num_examples']} examples, {shards} shards, top_k {meta['top_k']})")
