"""``fastkd superglue mpdistil`` (task names are SuperGLUE's: ``rte`` is SuperGLUE RTE, jsonl)."""

from __future__ import annotations

from typing import Any


def register(groups: Any) -> None:
    from fastkd.trainer.mpdistil.cli import add_mpdistil_command

    superglue = groups.add_parser("superglue", help="SuperGLUE (BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC)")
    add_mpdistil_command(superglue.add_subparsers(dest="command", required=True))
