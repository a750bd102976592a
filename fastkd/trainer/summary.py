"""Run summaries: a JSON file and a markdown table (teacher, student, loss, metrics, time, tokens/s)."""

from __future__ import annotations

import json
import os
from typing import Any

from fastkd.trainer.distributed import is_main_process, world_size


def count_tokens(dataset: Any) -> int:
    """Number of (non-padding) tokens in a tokenized dataset."""
    return int(sum(len(ids) for ids in dataset["input_ids"]))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per run: role, model, loss, every metric, wall time, tokens/s (that column only when a
    row has ``train_tokens_per_s``)."""
    metric_names = sorted({k for row in rows for k in row.get("metrics", {})})
    speed = any("train_tokens_per_s" in row for row in rows)
    head = ["run", "model", "loss", *metric_names, "wall time (s)", *(["train tokens/s"] if speed else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        metrics = row.get("metrics", {})
        cells = [row.get("run", ""), row.get("model", ""), row.get("loss", "")]
        cells += [f"{metrics[m]:.4f}" if m in metrics else "" for m in metric_names]
        cells.append(f"{row.get('wall_time_s', 0):.1f}")
        cells += [f"{row.get('train_tokens_per_s', 0):.0f}"] if speed else []
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_summary(output_dir: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Write ``summary.json`` (with the run's ``world_size``) and ``summary.md`` under ``output_dir``;
    returns the markdown. In a multi-process run only rank 0 writes."""
    table = markdown_table(rows)
    if not is_main_process():
        return table
    summary = {**summary, "world_size": world_size()}
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
    with open(os.path.join(output_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return table
