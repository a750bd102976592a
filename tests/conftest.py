"""Test setup: without a GPU, Triton kernels run under the interpreter (set before triton is imported).

The ``aot_records`` fixture compiles every kernel family's configurations for sm_80 and sm_90 once per
session, in a subprocess without the interpreter (tests/aot_report.py), for the per-family tests.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def aot_records() -> list[dict]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "tests.aot_report"]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def assert_compiled_without_spills(records: list[dict], family: str, **label: object) -> list[dict]:
    """The records of ``family`` matching ``label`` exist for every architecture, compiled, no spills."""
    mine = [r for r in records if r["family"] == family and all(r.get(k) == v for k, v in label.items())]
    assert {r["arch"] for r in mine} == {80, 90}, (family, label)
    for record in mine:
        assert "error" not in record, record
        assert record["cubin_bytes"] > 0
        assert record["spills"] == 0, record
        assert record["registers"] <= 255, record
    return mine
