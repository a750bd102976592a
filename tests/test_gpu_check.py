"""The prepared GPU check (bench/gpu_check.sh) runs end to end on CPU at tiny shapes, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, standing in for the peers' wheels (Liger, orda) the device lacks."""
    path = folder / "gpu_check_probe-0.1-py3-none-any.whl"
    info = "gpu_check_probe-0.1.dist-info"
    files = {
        "gpu_check_probe.py": "VERSION = '0.1'\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def test_gpu_check_dry_run_writes_log_tests_and_both_reports(tmp_path: Path) -> None:
    env = {**os.environ, "FASTKD_GPU_CHECK_DRY_RUN": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), str(_probe_wheel(tmp_path))],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (out / "gpu_check.log").read_text()
    assert run.returncode == 0, log[-3000:]
    assert "=== tests: ok" in log and "=== fused_linear: ok" in log and "0 failed step(s)" in log
    assert "=== wheels: ok" in log and (out / "wheels" / "gpu_check_probe.py").is_file()
    assert "gpu-check-probe==0.1" in (out / "env.txt").read_text()  # the peers' versions are recorded
    assert "passed" in (out / "tests.txt").read_text()
    fused = (out / "fused_linear.md").read_text()
    assert "fused_linear forward_kl" in fused and "trl" in fused
    assert "fastkd-cpu" in (out / "divergences.md").read_text()
