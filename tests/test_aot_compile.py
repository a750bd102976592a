"""Every kernel configuration the launchers can choose compiles for sm_80 and sm_90 without spills.

The Triton interpreter runs the kernels' arithmetic on CPU but not the compiler, so a subprocess
without TRITON_INTERPRET compiles ahead of time for real GPUs (no GPU needed) and ptxas reports
registers and spills (tests/aot_report.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from fastkd.kernels import divergence as kd
from fastkd.options import DIVERGENCES


@pytest.fixture(scope="module")
def records() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("aot_report.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_kernel_ids_match_option_names():
    names = ("FORWARD_KL", "SOFT_CE", "REVERSE_KL", "JSD", "SKEW_KL", "SKEW_REVERSE_KL", "TVD", "AKL")
    assert [getattr(kd, n).value for n in names] == list(range(len(DIVERGENCES)))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_kernel_compiles_without_spills(records, divergence):
    mine = [r for r in records if r["divergence"] == divergence]
    assert {r["arch"] for r in mine} == {80, 90}
    assert {r["hard"] for r in mine} == {False, True}
    for record in mine:
        assert "error" not in record, record
        assert record["cubin_bytes"] > 0
        assert record["spills"] == 0, record
        assert record["registers"] <= 255, record
