"""bench/report.py on a small synthetic pytest-benchmark JSON: table numbers, speed-ups and the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import main

MIB = 2**20


def _entry(
    provider: str, divergence: str, n: int, v: int, median_s: float, peak: int | None
) -> dict[str, Any]:
    return {
        "name": f"test_divergence[{divergence}-N{n}-V{v}-bfloat16-{provider}]",
        "group": f"{divergence} N{n}-V{v} bfloat16",
        "stats": {"median": median_s, "min": median_s, "max": median_s, "rounds": 5},
        "extra_info": {
            "provider": provider,
            "divergence": divergence,
            "N": n,
            "V": v,
            "dtype": "bfloat16",
            "device": "NVIDIA H100 80GB HBM3",
            "bytes_moved": 3 * n * v * 2,
            "peak_mem_bytes": peak,
        },
    }


@pytest.fixture
def bench_json(tmp_path: Path) -> Path:
    benchmarks = [
        _entry("torch-eager", "forward_kl", 1000, 1000, 3e-3, 40 * MIB),
        _entry("fastkd-triton", "forward_kl", 1000, 1000, 1e-3, 2 * MIB),
        _entry("liger", "forward_kl", 1000, 1000, 1.5e-3, 6 * MIB),
        _entry("fastkd-triton", "forward_kl", 2000, 1000, 2e-3, None),
        _entry("torch-eager", "forward_kl", 2000, 1000, 5e-3, 80 * MIB),
        {"name": "unrelated", "stats": {"median": 1.0}, "extra_info": {}},
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return path


def _rows(markdown: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[1:]
    ]
    return {(row["divergence"], row["N"]): row for row in rows}


def test_report_table_and_plot(bench_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main([str(bench_json), "--out", str(out)]) == 0
    markdown = (out / "run.md").read_text()
    assert capsys.readouterr().out == markdown
    rows = _rows(markdown)
    assert set(rows) == {("forward_kl", "1000"), ("forward_kl", "2000")}
    first, second = rows["forward_kl", "1000"], rows["forward_kl", "2000"]
    assert first["fastkd-triton ms"] == "1" and first["torch-eager ms"] == "3"
    assert first["fastkd-triton GB/s"] == "6" and first["liger GB/s"] == "4"
    assert first["torch-eager MiB"] == "40" and first["fastkd-triton MiB"] == "2"
    assert first["fastkd-triton vs torch-eager"] == "3.00×"
    assert first["fastkd-triton vs liger"] == "1.50×"
    assert second["fastkd-triton vs torch-eager"] == "2.50×"
    assert second["liger ms"] == second["liger GB/s"] == second["fastkd-triton MiB"] == "—"
    assert second["fastkd-triton vs liger"] == "—"
    png = out / "run.png"
    assert png.exists() and png.stat().st_size > 1000


def test_report_baseline_option_and_default_folder(bench_json: Path) -> None:
    assert main([str(bench_json), "--baseline", "liger"]) == 0
    rows = _rows((bench_json.parent / "run.md").read_text())
    assert rows["forward_kl", "1000"]["liger vs torch-eager"] == "2.00×"
    assert (bench_json.parent / "run.png").stat().st_size > 0
    with pytest.raises(ValueError, match="baseline"):
        main([str(bench_json), "--baseline", "nobody"])
