"""The prepared GPU check (bench/gpu_check.sh) runs end to end on CPU at tiny shapes, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_log_tests_and_both_reports(tmp_path: Path) -> None:
    env = {**os.environ, "FASTKD_GPU_CHECK_DRY_RUN": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (tmp_path / "gpu_check.log").read_text()
    assert run.returncode == 0, log[-3000:]
    assert "=== tests: ok" in log and "=== fused_linear: ok" in log and "0 failed step(s)" in log
    assert "passed" in (tmp_path / "tests.txt").read_text()
    fused = (tmp_path / "fused_linear.md").read_text()
    assert "fused_linear forward_kl" in fused and "trl" in fused
    assert "fused_linear forward_kl softcap 30" in fused  # the kernels' capped configuration
    assert "fastkd-cpu" in (tmp_path / "divergences.md").read_text()
