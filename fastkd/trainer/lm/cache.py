"""Offline teacher cache: the teacher's top-k log-probabilities per token, in safetensors shards.

Layout of ``DIR``: ``cache.json`` (format, teacher, top_k, vocab_size, temperature, max_length,
num_examples, shards) and ``shard-NNNNN.safetensors`` (``shard-rRRR-NNNNN.safetensors`` when rank R
of a torchrun job wrote it: each rank caches a contiguous block of the examples, rank 0 lists every
shard in example order, so the reader is the same for any number of ranks) holding, for the
examples of that shard concatenated along the token axis, ``input_ids`` [T] and ``labels`` [T]
(int64), ``offsets`` [n+1] (int64, example i is rows offsets[i]:offsets[i+1]), ``topk_indices``
[T, k] (int32) and ``topk_logprobs`` [T, k] (fp32, log-softmax of the teacher logits at ``temperature``, from
``fastkd.teacher_topk``).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import fastkd
from fastkd.trainer.distributed import (
    gather_in_rank_order,
    init_from_launcher,
    is_main_process,
    rank_block,
    rank_file_prefix,
)
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.trainer import load_teacher

FORMAT = "fastkd-teacher-topk/1"
META_NAME = "cache.json"


def _teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    topk = getattr(fastkd, "teacher_topk", None)
    if topk is None:
        raise ValueError(
            "this fastkd build has no fastkd.teacher_topk (the sparse family): cannot cache a teacher"
        )
    return topk(logits, k, temperature=temperature)


@torch.no_grad()
def _shard(
    teacher: Any, examples: list[dict[str, list[int]]], pad: int, k: int, temperature: float, batch: int
):
    collate, rows = LMCollator(pad), {"input_ids": [], "labels": [], "topk_indices": [], "topk_logprobs": []}
    device = next(teacher.parameters()).device
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        inputs = collate(chunk)
        logits = teacher(
            input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
        )
        indices, logprobs = _teacher_topk(logits.logits, k, temperature)
        for i, example in enumerate(chunk):
            n = len(example["input_ids"])
            rows["input_ids"].append(torch.tensor(example["input_ids"]))
            rows["labels"].append(torch.tensor(example["labels"]))
            rows["topk_indices"].append(indices[i, :n].to("cpu", torch.int32))
            rows["topk_logprobs"].append(logprobs[i, :n].to("cpu", torch.float32))
    lengths = torch.tensor([0] + [len(e["input_ids"]) for e in examples])
    out = {key: torch.cat(values).contiguous() for key, values in rows.items()}
    out["offsets"] = torch.cumsum(lengths, 0)
    return out


def cache_teacher(
    teacher_path: str,
    data: str,
    top_k: int,
    output: str,
    *,
    max_length: int = 512,
    batch_size: int = 8,
    shard_size: int = 1024,
    max_samples: int | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Write the top-``top_k`` teacher log-probs over ``data`` to ``output``; returns the metadata."""
    from transformers import AutoTokenizer

    init_from_launcher()  # under torchrun: each rank caches its contiguous block of the examples
    records = read_jsonl(data, max_samples)
    teacher = load_teacher(teacher_path, "causal_lm").eval()
    vocab = int(teacher.config.vocab_size)
    if not 1 <= top_k <= vocab:
        raise ValueError(f"--top-k must be in [1, {vocab}] (the teacher's vocabulary), got {top_k}")
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    examples = encode_all(records, tokenizer, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    os.makedirs(output, exist_ok=True)
    shards, block = [], rank_block(len(examples))
    for number, start in enumerate(range(block.start, block.stop, shard_size)):
        name = f"{rank_file_prefix('shard')}{number:05d}.safetensors"
        part = examples[start : min(start + shard_size, block.stop)]
        tensors = _shard(teacher, part, pad, top_k, temperature, batch_size)
        save_file(tensors, os.path.join(output, name))
        shards.append(name)
    shards = gather_in_rank_order(shards)  # cache.json lists every rank's shards, in example order
    meta = {
        "format": FORMAT,
        "teacher": teacher_path,
        "data": data,
        "top_k": top_k,
        "vocab_size": vocab,
        "temperature": temperature,
        "max_length": max_length,
        "num_examples": len(examples),
        "shards": shards,
    }
    if is_main_process():
        with open(os.path.join(output, META_NAME), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
    return meta


def read_cache_meta(directory: str) -> dict[str, Any]:
    """The metadata of a teacher cache; ValueError when ``directory`` is not one."""
    path = os.path.join(directory, META_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"{directory!r} is not a teacher cache (no {META_NAME}); run `fastkd lm cache-teacher`"
        )
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown cache format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_cache(directory: str, max_samples: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metadata and the cached examples (input_ids, labels, teacher_topk_indices/logprobs)."""
    meta = read_cache_meta(directory)
    examples: list[dict[str, Any]] = []
    for name in meta["shards"]:
        shard = load_file(os.path.join(directory, name))
        offsets = shard["offsets"].tolist()
        for a, b in itertools.pairwise(offsets):
            examples.append(
                {
                    "input_ids": shard["input_ids"][a:b].tolist(),
                    "labels": shard["labels"][a:b].tolist(),
                    "teacher_topk_indices": shard["topk_indices"][a:b].long(),
                    "teacher_topk_logprobs": shard["topk_logprobs"][a:b],
                }
            )
    if max_samples is not None:
        examples = examples[:max_samples]
    if not examples:
        raise ValueError(f"teacher cache {directory!r} holds no examples")
    return meta, examples
