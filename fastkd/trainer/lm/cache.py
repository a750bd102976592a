"""Offline teacher cache: the teacher's top-k log-probabilities per token, in safetensors shards.

Layout of ``DIR``: ``cache.json`` (format, teacher, top_k, vocab_size, vocab_sha256 of the teacher's
tokenizer, temperature, max_length, num_examples and, per shard, its name, bytes, sha256, examples and
tokens), the teacher's tokenizer under ``tokenizer/``, and ``shard-NNNNN.safetensors`` files
(``shard-rRRR-NNNNN.safetensors`` when rank R of a torchrun job wrote them: each rank caches a
contiguous block of the examples and rank 0 lists every shard in example order, so the reader is the
same for any number of ranks), each holding, for the examples of that shard concatenated along the
token axis, ``input_ids`` [T] and ``labels`` [T] (int64), ``offsets`` [n+1] (int64, example i is rows
offsets[i]:offsets[i+1]), ``topk_indices`` [T, k] (int32) and ``topk_logprobs`` [T, k] (fp32,
log-softmax of the teacher logits at ``temperature``, from ``fastkd.teacher_topk``).
``fastkd.trainer.lm.cache_check`` verifies it all.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from typing import Any

import torch
from safetensors.torch import save_file

import fastkd
from fastkd.trainer.distributed import (
    barrier,
    gather_in_rank_order,
    init_from_launcher,
    is_main_process,
    rank_block,
    rank_file_prefix,
)
from fastkd.trainer.lm.cache_check import FORMAT, META_NAME, SHARD_GLOB, read_meta, read_shard, shard_entry
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.trainer import load_teacher
from fastkd.trainer.vocab import load_tokenizer, vocabulary, vocabulary_sha256

TOKENIZER_DIR = "tokenizer"


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
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size), ("max_length", max_length)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    init_from_launcher()  # under torchrun: each rank caches its contiguous block of the examples
    records = read_jsonl(data, max_samples)
    teacher = load_teacher(teacher_path, "causal_lm").eval()
    vocab = int(teacher.config.vocab_size)
    if not 1 <= top_k <= vocab:
        raise ValueError(f"--top-k must be in [1, {vocab}] (the teacher's vocabulary), got {top_k}")
    tokenizer = load_tokenizer(teacher_path, "teacher")
    examples = encode_all(records, tokenizer, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    os.makedirs(output, exist_ok=True)
    if is_main_process():
        for stale in glob.glob(os.path.join(output, SHARD_GLOB)):
            os.remove(stale)
    barrier()  # no rank writes a shard before rank 0 has removed the stale ones
    shards, block = [], rank_block(len(examples))
    for number, start in enumerate(range(block.start, block.stop, shard_size)):
        path = os.path.join(output, f"{rank_file_prefix('shard')}{number:05d}.safetensors")
        part = examples[start : min(start + shard_size, block.stop)]
        tensors = _shard(teacher, part, pad, top_k, temperature, batch_size)
        save_file(tensors, path)
        shards.append(shard_entry(path, len(part), int(tensors["input_ids"].numel())))
    shards = gather_in_rank_order(shards)  # cache.json lists every rank's shards, in example order
    if is_main_process():
        tokenizer.save_pretrained(os.path.join(output, TOKENIZER_DIR))
    meta = {
        "format": FORMAT,
        "teacher": teacher_path,
        "data": data,
        "top_k": top_k,
        "vocab_size": vocab,
        "vocab_sha256": vocabulary_sha256(vocabulary(tokenizer)),
        "temperature": float(temperature),
        "max_length": max_length,
        "num_examples": len(examples),
        "shards": shards,
    }
    if is_main_process():
        with open(os.path.join(output, META_NAME), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
    return meta


def read_cache_meta(directory: str) -> dict[str, Any]:
    """The checked metadata of a teacher cache; ValueError naming the file when it is not one."""
    return read_meta(directory)


def load_cache(directory: str, max_samples: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The metadata and the cached examples (input_ids, labels, teacher_topk_indices/logprobs); every
    shard read is checked (size, sha256, layout) first."""
    meta = read_meta(directory)
    examples: list[dict[str, Any]] = []
    for entry in meta["shards"]:
        if max_samples is not None and len(examples) >= max_samples:
            break
        shard = read_shard(directory, entry, meta)
        for a, b in itertools.pairwise(shard["offsets"].tolist()):
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


def cache_tokenizer_path(directory: str) -> str:
    """The folder of the tokenizer the cache was written with."""
    return os.path.join(directory, TOKENIZER_DIR)
