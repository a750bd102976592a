"""bench/report.py on a small synthetic pytest-benchmark JSON (one table per family, numbers, speed-ups,
a legend naming every provider of every panel), and the CPU timing defaults of bench/shapes.py and
bench/common.py (rounds, and memory beyond the gradients)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import matplotlib.figure
import pytest
import torch

from bench.common import calls_per_round, memory_info
from bench.memory import measure
from bench.report import main
from bench.shapes import Shape, shapes

MIB = 2**20


def _entry(
    family: str, provider: str, case: str, n: int, median_s: float, peak: int | None, **info: Any
) -> dict[str, Any]:
    return {
        "name": f"test_{family}[{case}-N{n}-V1000-bfloat16-{provider}]",
        "fullname": f"bench/bench_{family}.py::test_{family}[{case}-N{n}-V1000-bfloat16-{provider}]",
        "group": f"{case} N{n}-V1000 bfloat16",
        "stats": {"median": median_s, "min": median_s, "max": median_s, "rounds": 5},
        "extra_info": {
            "provider": provider,
            "V": 1000,
            "dtype": "bfloat16",
            "device": "NVIDIA H100 80GB HBM3",
            "peak_mem_bytes": peak,
            **info,
        },
    }


def _logits(provider: str, case: str, n: int, median_s: float, peak: int | None, **load: Any) -> dict:
    info = {"divergence": case, "N": n, "bytes_moved": 3 * n * 1000 * 2, **load}
    return _entry("divergences", provider, case, n, median_s, peak, **info)


@pytest.fixture
def bench_json(tmp_path: Path) -> Path:
    benchmarks = [
        _logits("torch-eager", "forward_kl", 1000, 3e-3, 40 * MIB, load_average=1.5, cores=2),
        _logits("fastkd-triton", "forward_kl", 1000, 1e-3, 2 * MIB, load_average=9.25, cores=2),
        _logits("liger", "forward_kl", 1000, 1.5e-3, 6 * MIB),
        _logits("fastkd-triton", "forward_kl", 2000, 2e-3, None),
        _logits("torch-eager", "forward_kl", 2000, 5e-3, 80 * MIB),
        # a panel of its own whose providers the first panel lacks
        _logits("torch-compile", "reverse_kl", 1000, 4e-3, 3 * MIB),
        _logits("fastkd-triton", "reverse_kl", 1000, 2e-3, 2 * MIB),
        # another family: no bytes_moved (no GB/s), no memory (no MiB), B for its rows
        _entry("sinkhorn", "fastkd-fused-torch", "sinkhorn", 64, 1e-3, None, B=64),
        _entry("sinkhorn", "naive", "sinkhorn", 64, 8e-3, None, B=64),
        {"name": "unrelated", "stats": {"median": 1.0}, "extra_info": {}},
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return path


def _tables(markdown: str) -> dict[str, tuple[list[str], dict[tuple[str, str, str], dict[str, str]]]]:
    """Family -> (header, rows keyed by (case, N, provider)) of every ``## family`` table."""
    tables = {}
    for section in markdown.split("\n## ")[1:]:
        name, *lines = section.splitlines()
        lines = [line for line in lines if line.startswith("| ")]
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
        rows = [dict(zip(header, row, strict=True)) for row in cells]
        tables[name] = (header, {(r["case"], r["N"], r["provider"]): r for r in rows})
    return tables


def test_one_table_per_family_with_its_own_providers_and_metrics(
    bench_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([str(bench_json), "--out", str(out)]) == 0
    markdown = (out / "run.md").read_text()
    assert capsys.readouterr().out == markdown
    tables = _tables(markdown)
    assert set(tables) == {"divergences", "sinkhorn"}
    header, rows = tables["divergences"]
    assert header == ["case", "N", "V", "dtype", "provider", "ms", "GB/s", "MiB", "fastkd-triton speed-up"]
    assert len(rows) == 7 and not any(p == "naive" for _, _, p in rows)
    first = rows["forward_kl", "1000", "fastkd-triton"]
    assert (first["ms"], first["GB/s"], first["MiB"]) == ("1", "6", "2")
    assert first["fastkd-triton speed-up"] == "baseline"
    assert rows["forward_kl", "1000", "torch-eager"]["fastkd-triton speed-up"] == "3.00×"
    assert rows["forward_kl", "1000", "liger"]["fastkd-triton speed-up"] == "1.50×"
    assert rows["forward_kl", "2000", "torch-eager"]["fastkd-triton speed-up"] == "2.50×"
    assert rows["forward_kl", "2000", "fastkd-triton"]["MiB"] == "—"
    assert rows["reverse_kl", "1000", "torch-compile"]["fastkd-triton speed-up"] == "2.00×"
    header, rows = tables["sinkhorn"]
    assert header == ["case", "N", "V", "dtype", "provider", "ms", "fastkd-fused-torch speed-up"]
    assert rows["sinkhorn", "64", "naive"]["fastkd-fused-torch speed-up"] == "8.00×"
    assert "Load average 1.5-9.2 on 2 cores: a loaded machine" in markdown
    png = out / "run.png"
    assert png.exists() and png.stat().st_size > 1000


def test_plot_legend_names_every_provider_of_every_panel(
    bench_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[matplotlib.figure.Figure] = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), original(fig, *a, **k))
    )
    assert main([str(bench_json), "--out", str(tmp_path / "report")]) == 0
    (figure,) = saved
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    expected = ["fastkd-triton", "torch-eager", "torch-compile", "liger", "fastkd-fused-torch", "naive"]
    assert labels == expected
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.axison]
    assert len(panels) == 3  # forward_kl, reverse_kl, sinkhorn


def test_report_baseline_option_and_default_folder(bench_json: Path) -> None:
    assert main([str(bench_json), "--baseline", "liger"]) == 0
    tables = _tables((bench_json.parent / "run.md").read_text())
    rows = tables["divergences"][1]
    assert rows["forward_kl", "1000", "torch-eager"]["liger speed-up"] == "2.00×"
    assert rows["forward_kl", "2000", "torch-eager"]["liger speed-up"] == "—"
    assert "fastkd-fused-torch speed-up" in tables["sinkhorn"][0]  # no liger there: its own baseline
    assert (bench_json.parent / "run.png").stat().st_size > 0
    with pytest.raises(ValueError, match="baseline"):
        main([str(bench_json), "--baseline", "nobody"])


def test_cpu_shapes_are_large_enough_to_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTKD_BENCH_SHAPES", raising=False)
    table = shapes("cpu")
    assert Shape(512, 32000) in table  # the CPU target of the performance notes
    assert all(shape.n * shape.v >= 4_000_000 for shape in table)
    monkeypatch.setenv("FASTKD_BENCH_SHAPES", "8x1271")
    assert shapes("cpu") == [Shape(8, 1271)]


def test_calls_per_round_repeats_a_short_call_to_fill_the_round() -> None:
    assert calls_per_round(lambda: time.sleep(0.003), min_round_s=0.03) <= 10
    assert calls_per_round(lambda: time.sleep(0.003), min_round_s=0.03) >= 3
    assert calls_per_round(lambda: time.sleep(0.02), min_round_s=0.01) == 1
    assert calls_per_round(lambda: None, min_round_s=10.0) == 10_000


def test_memory_info_subtracts_the_step_gradients_and_never_the_inputs() -> None:
    """measure() holds what the step allocates (the kept gradient, a freed temporary), not the inputs
    that exist before it; memory_info's extra is then the temporary. Autograd allocates d weight in the
    step even when ``w.grad`` exists (as between bench rounds), so subtracting it is right."""
    inputs = torch.randn(1024, 1024)  # 4 MiB, before the step
    kept = []

    def step() -> None:
        temporary = inputs * 2.0  # 4 MiB, freed when the step ends
        kept.append(torch.zeros(256, 1024))  # 1 MiB: the gradient the step leaves
        del temporary

    info = memory_info(measure(step, "cpu"), gradient_bytes=MIB)
    assert info["peak_mem_method"] == "profiler allocation events"
    assert (info["peak_mem_bytes"], info["extra_mem_bytes"]) == (5 * MIB, 4 * MIB)
    hidden = torch.randn(16, 64, requires_grad=True)
    weight = torch.randn(4096, 64, requires_grad=True)
    (hidden @ weight.t()).sum().backward()
    hidden.grad = None
    memory = measure(lambda: (hidden @ weight.t()).sum().backward(), "cpu")
    assert weight.numel() * 4 in memory.allocations and hidden.numel() * 4 in memory.allocations
