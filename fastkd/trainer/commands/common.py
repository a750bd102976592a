"""Argument types and options shared by the command groups (no heavy imports)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


PRECISIONS = ("fp32", "bf16", "fp16")


def add_run_options(p: argparse.ArgumentParser, backend: bool = True) -> None:
    """--resume / --no-resume, --precision (and --backend) of every training command."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        default="auto",
        help="continue from this checkpoint folder; default: from the latest checkpoint in --output, if any "
        "(an interrupted run leaves one; a finished run removes its checkpoints)",
    )
    group.add_argument(
        "--no-resume",
        dest="resume",
        action="store_const",
        const="never",
        help="start over, deleting the checkpoints left in --output",
    )
    p.set_defaults(explicit_resume=True)  # the Ctrl-C message may suggest --resume CHECKPOINT
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default), or bf16 / fp16 autocast mixed precision (fp32 weights, optimizer state and "
        "checkpoints; the teacher's forward and the loss run under the same autocast; fp16 needs a GPU)",
    )
    if backend:
        p.add_argument(
            "--backend",
            default="auto",
            help="fastkd loss backend: auto, triton, cuda, cpu or torch (checked before any work)",
        )


def set_handler(p: argparse.ArgumentParser, handler: Any, extra: str | None = "trainer") -> None:
    p.set_defaults(handler=handler, extra=extra)
