"""The GPU check of the cuda backend can run where no GPU is: its shell script parses, the sanitizer's
small shapes reach every cluster size, and the summary computes GB/s and the bandwidth fraction."""

from __future__ import annotations

import json
import subprocess

import torch

from bench.cuda_sanitize import CASES, SMALL_CASES
from bench.cuda_summary import rows
from fastkd.ops.cuda_plan import plan_for
from tests.cuda_build import ROOT


def test_the_script_parses():
    out = subprocess.run(
        ["bash", "-n", str(ROOT / "bench" / "gpu_check_cuda.sh")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_the_sanitizer_reaches_every_cluster_size():
    size = lambda dtype: torch.empty((), dtype=dtype).element_size()
    assert {plan_for(v, size(t)).cluster for t, v in CASES} == {1, 2, 4, 8}
    assert {plan_for(v, size(t), target=4096).cluster for t, v in SMALL_CASES} == {1, 2, 4, 8}


def test_the_summary_rows(tmp_path):
    info = {
        "divergence": "forward_kl",
        "N": 16384,
        "V": 128256,
        "dtype": "bfloat16",
        "provider": "fastkd-cuda",
    }
    info |= {"bytes_moved": 12_608_077_824, "extra_mem_bytes": 2**21}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": [{"extra_info": info, "stats": {"median": 3.2e-3}}]}))
    (line, missing) = rows([str(path), str(tmp_path / "absent.json")], bandwidth=4.3e12)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:] == ["fastkd-cuda", "3.200", "3940", "0.92", "2"], cells
    assert "missing" in missing
