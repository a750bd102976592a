"""Causal-LM data: jsonl lines ``{"prompt", "response"}`` (loss on the response only) or ``{"text"}``."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from fastkd.trainer.preflight import read_text


def read_jsonl(path: str, max_samples: int | None = None) -> list[dict[str, str]]:
    """The records of ``path``; each must have ``text`` or both ``prompt`` and ``response``."""
    if not os.path.isfile(path):
        raise ValueError(f"data file not found: {path}")
    records = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not a JSON object ({err})") from err
        if not isinstance(record, dict) or not ("text" in record or {"prompt", "response"} <= set(record)):
            raise ValueError(f"{path}:{line_no}: expected keys 'text' or 'prompt' and 'response'")
        records.append(record)
        if max_samples is not None and len(records) >= max_samples:
            break
    if not records:
        raise ValueError(f"{path}: the dataset is empty")
    return records


def encode(record: dict[str, str], tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels (-100 on the prompt: response-only loss), ending with EOS when there is one."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    tail = [eos] if eos is not None else []
    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"] + tail
        labels = list(ids)
    else:
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        response = tokenizer(" " + record["response"], add_special_tokens=False)["input_ids"] + tail
        ids, labels = prompt + response, [-100] * len(prompt) + response
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def encode_all(records: list[dict[str, str]], tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    out = [encode(r, tokenizer, max_length) for r in records]
    if not any(any(label != -100 for label in e["labels"][1:]) for e in out):
        raise ValueError("no example has a response token to learn from (check max_length and the data)")
    return out


class LMCollator:
    """Right-pads input_ids (pad id), attention_mask, labels (-100) and any teacher top-k columns."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {}
        batch["input_ids"] = torch.tensor([_pad(f["input_ids"], length, self.pad) for f in features])
        batch["attention_mask"] = torch.tensor([_pad([1] * len(f["input_ids"]), length, 0) for f in features])
        batch["labels"] = torch.tensor([_pad(f["labels"], length, -100) for f in features])
        if "teacher_topk_indices" in features[0]:
            for key, dtype in (
                ("teacher_topk_indices", torch.int64),
                ("teacher_topk_logprobs", torch.float32),
            ):
                rows = [torch.as_tensor(f[key], dtype=dtype) for f in features]
                padded = torch.zeros(len(rows), length, rows[0].shape[-1], dtype=dtype)
                for i, row in enumerate(rows):
                    padded[i, : row.shape[0]] = row
                batch[key] = padded
        return batch


def _pad(values: list[int], length: int, fill: int) -> list[int]:
    return list(values) + [fill] * (length - len(values))
