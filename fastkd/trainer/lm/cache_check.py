"""Integrity of a teacher cache: ``cache.json`` and every shard are checked before any is used.

``cache.json`` records, per shard, its file name, size in bytes, sha256, example and token counts. The
reader recomputes size and sha256 from the bytes it loads (one read), then checks the tensors' layout:
``offsets`` starts at 0, never decreases, ends at the token count and has one entry per example plus
one; the token axis of every tensor agrees; ``topk_indices`` lie in ``[0, vocab_size)``. Any failure
is a ValueError naming the file, so a truncated, missing, overwritten or corrupted shard is never
turned into empty or wrong examples.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any

import torch

FORMAT = "fastkd-teacher-topk/2"
META_NAME = "cache.json"
SHARD_GLOB = "shard-*.safetensors"
META_KEYS = {
    "format": str,
    "teacher": str,
    "top_k": int,
    "vocab_size": int,
    "vocab_sha256": str,
    "temperature": float,
    "max_length": int,
    "num_examples": int,
    "shards": list,
}
SHARD_KEYS = {"name": str, "bytes": int, "sha256": str, "examples": int, "tokens": int}
TENSORS = {
    "input_ids": torch.int64,
    "labels": torch.int64,
    "offsets": torch.int64,
    "topk_indices": torch.int32,
    "topk_logprobs": torch.float32,
}


def shard_entry(path: str, examples: int, tokens: int) -> dict[str, Any]:
    """The ``cache.json`` entry of a written shard."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    return {
        "name": name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "examples": examples,
        "tokens": tokens,
    }


def _typed(entry: Any, keys: dict[str, type], where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    for key, kind in keys.items():
        value = entry.get(key)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise ValueError(f"{where}: field {key!r} should be a {kind.__name__}, got {value!r}")


def read_meta(directory: str) -> dict[str, Any]:
    """The checked contents of ``DIR/cache.json``; ValueError naming the file otherwise."""
    path = os.path.join(directory, META_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"{directory!r} is not a teacher cache (no {META_NAME}); run `fastkd lm cache-teacher`"
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: broken cache metadata ({err})") from None
    if isinstance(meta, dict) and meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: cache format {meta.get('format')!r}, expected {FORMAT!r} "
            "(rewrite the cache with this version's `fastkd lm cache-teacher`)"
        )
    _typed(meta, META_KEYS, path)
    for i, shard in enumerate(meta["shards"]):
        _typed(shard, SHARD_KEYS, f"{path}: shards[{i}]")
    listed = {s["name"] for s in meta["shards"]}
    stray = sorted(
        set(glob.glob(os.path.join(directory, SHARD_GLOB))) - {os.path.join(directory, n) for n in listed}
    )
    if stray:
        raise ValueError(f"{path}: shard {stray[0]} is not listed (a cache written over another?)")
    total = sum(s["examples"] for s in meta["shards"])
    if total != meta["num_examples"]:
        raise ValueError(
            f"{path}: the shards hold {total} examples, num_examples says {meta['num_examples']}"
        )
    return meta


def read_shard(directory: str, entry: dict[str, Any], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of one shard, after checking its size, sha256 and layout against ``entry``."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = os.path.join(directory, entry["name"])
    if not os.path.isfile(path):
        raise ValueError(f"{path}: shard missing (listed in {META_NAME})")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) != entry["bytes"]:
        raise ValueError(
            f"{path}: {len(data)} bytes, {META_NAME} says {entry['bytes']} (truncated or rewritten)"
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path}: sha256 differs from {META_NAME} (the file is corrupted)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    _check_layout(tensors, entry, meta, path)
    return tensors


def _check_layout(t: dict[str, torch.Tensor], entry: dict[str, Any], meta: dict[str, Any], path: str) -> None:
    for key, dtype in TENSORS.items():
        if key not in t or t[key].dtype != dtype:
            found = t[key].dtype if key in t else "missing"
            raise ValueError(f"{path}: tensor {key!r} should be {dtype}, found {found}")
    n, tokens, k = entry["examples"], entry["tokens"], meta["top_k"]
    offsets = t["offsets"]
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != tokens or (offsets.diff() < 0).any():
        raise ValueError(f"{path}: corrupted offsets (need {n + 1} non-decreasing values from 0 to {tokens})")
    for key, shape in (("input_ids", (tokens,)), ("labels", (tokens,)), ("topk_indices", (tokens, k))):
        if tuple(t[key].shape) != shape:
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(t[key].shape)}, expected {shape}")
    if tuple(t["topk_logprobs"].shape) != (tokens, k):
        raise ValueError(f"{path}: tensor 'topk_logprobs' has shape {tuple(t['topk_logprobs'].shape)}")
    indices = t["topk_indices"]
    if indices.numel() and (indices.min() < 0 or indices.max() >= meta["vocab_size"]):
        raise ValueError(f"{path}: topk_indices outside [0, {meta['vocab_size']})")


def verify_cache(directory: str) -> dict[str, Any]:
    """Check ``cache.json`` and every shard (size, sha256, layout); returns the metadata."""
    meta = read_meta(directory)
    for entry in meta["shards"]:
        read_shard(directory, entry, meta)
    return meta
