"""Turn a pytest-benchmark JSON of ``bench/bench_divergences.py`` into a markdown table and a PNG plot.

``python -m bench.report out.json [--out DIR] [--baseline PROVIDER]`` (also ``fastkd-bench``) writes
DIR/<name>.md and DIR/<name>.png, <name> being the JSON's file name without its suffix, DIR the
JSON's folder by default, and prints the markdown. One row per (divergence, N, V, dtype); per
provider the median forward+backward time, GB/s (3·N·V·itemsize bytes over the median) and peak
memory beyond the inputs; then the baseline's speed-up over each peer (peer median / baseline median).
The baseline is the first fastkd provider present unless ``--baseline`` names one. Providers missing
from a row show as "—".
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.shapes import bytes_moved, gbps

PROVIDER_ORDER = ("fastkd-triton", "fastkd-cuda", "fastkd-cpu", "torch-eager", "torch-compile", "liger")
MISSING = "—"
Case = tuple[str, int, int, str]


@dataclass(frozen=True)
class Result:
    """One provider's measurement of one case."""

    median_s: float
    gbps: float
    peak_mem_bytes: int | None


@dataclass
class Report:
    """Every case with its results by provider, the providers in display order, and the baseline."""

    cases: dict[Case, dict[str, Result]] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    baseline: str | None = None
    devices: list[str] = field(default_factory=list)


def _result(entry: dict[str, Any]) -> tuple[Case, str, Result] | None:
    info, stats = entry.get("extra_info", {}), entry.get("stats") or {}
    keys = ("provider", "divergence", "N", "V", "dtype")
    if any(key not in info for key in keys) or not stats.get("median"):
        return None
    case = (info["divergence"], int(info["N"]), int(info["V"]), info["dtype"])
    nbytes = info.get("bytes_moved") or bytes_moved(case[1], case[2], case[3])
    median = float(stats["median"])
    return case, info["provider"], Result(median, gbps(nbytes, median), info.get("peak_mem_bytes"))


def _provider_key(provider: str) -> tuple[int, str]:
    known = PROVIDER_ORDER.index(provider) if provider in PROVIDER_ORDER else len(PROVIDER_ORDER)
    return known, provider


def load(data: dict[str, Any], baseline: str | None = None) -> Report:
    """Collect the benchmarks of a pytest-benchmark JSON document, skipping entries without our extra_info."""
    report = Report()
    for entry in data.get("benchmarks", []):
        parsed = _result(entry)
        if parsed is None:
            continue
        case, provider, result = parsed
        report.cases.setdefault(case, {})[provider] = result
        device = entry["extra_info"].get("device")
        if device and device not in report.devices:
            report.devices.append(device)
    report.cases = dict(sorted(report.cases.items()))
    report.providers = sorted({p for results in report.cases.values() for p in results}, key=_provider_key)
    if baseline is not None and baseline not in report.providers:
        raise ValueError(f"baseline {baseline!r} is not among the providers {report.providers}")
    fastkd = [p for p in report.providers if p.startswith("fastkd")]
    report.baseline = baseline or (fastkd[0] if fastkd else None)
    return report


def _number(value: float | None, digits: int) -> str:
    """``value`` to ``digits`` significant digits, or the missing mark."""
    return MISSING if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _row(case: Case, results: dict[str, Result], report: Report) -> list[str]:
    get = results.get
    cells = [case[0], str(case[1]), str(case[2]), case[3]]
    cells += [_number(r.median_s * 1e3 if (r := get(p)) else None, 4) for p in report.providers]
    cells += [_number(r.gbps if (r := get(p)) else None, 3) for p in report.providers]
    for p in report.providers:
        peak = r.peak_mem_bytes if (r := get(p)) else None
        cells.append(_number(peak / 2**20 if peak is not None else None, 3))
    base = get(report.baseline) if report.baseline else None
    for p in _peers(report):
        peer = get(p)
        cells.append(f"{peer.median_s / base.median_s:.2f}×" if base and peer else MISSING)
    return cells


def _peers(report: Report) -> list[str]:
    return [p for p in report.providers if report.baseline and p != report.baseline]


def markdown(report: Report, title: str) -> str:
    """The report as markdown: a short legend and one table row per case."""
    header = ["divergence", "N", "V", "dtype"]
    header += [f"{p} ms" for p in report.providers] + [f"{p} GB/s" for p in report.providers]
    header += [f"{p} MiB" for p in report.providers]
    header += [f"{report.baseline} vs {p}" for p in _peers(report)]
    lines = [
        f"# {title}",
        "",
        f"Device: {', '.join(report.devices) or 'unknown'}. ms: median forward+backward; GB/s: "
        "3·N·V·itemsize over the median; MiB: peak memory beyond the inputs"
        + (f"; speed-up: peer median / {report.baseline} median." if report.baseline else "."),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i in (0, 3) else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_row(case, res, report)) + " |" for case, res in report.cases.items()]
    return "\n".join(lines) + "\n"


def _panel(ax: Any, report: Report, series: tuple[str, int, str], colours: dict[str, str]) -> None:
    divergence, v, dtype = series
    tokens = sorted({case[1] for case in report.cases if (case[0], case[2], case[3]) == series})
    for provider in report.providers:
        points = sorted(
            (case[1], results[provider].median_s * 1e3)
            for case, results in report.cases.items()
            if (case[0], case[2], case[3]) == series and provider in results
        )
        if points:
            ax.plot(*zip(*points, strict=True), "o-", color=colours[provider], label=provider)
    ax.set(title=f"{divergence}, V={v}, {dtype}", xlabel="N tokens", ylabel="ms", yscale="log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(tokens, [str(n) for n in tokens])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.grid(True, alpha=0.3)


def plot(report: Report, path: Path, title: str) -> None:
    """Median time against N, one line per provider, one panel per (divergence, V, dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    divergences = sorted({case[0] for case in report.cases})
    columns = sorted({(case[2], case[3]) for case in report.cases})
    fig, axes = plt.subplots(
        len(divergences), len(columns), figsize=(4 * len(columns), 3.2 * len(divergences)), squeeze=False
    )
    colours = {p: f"C{i}" for i, p in enumerate(report.providers)}
    for i, divergence in enumerate(divergences):
        for j, (v, dtype) in enumerate(columns):
            _panel(axes[i][j], report, (divergence, v, dtype), colours)
    handles, labels = axes[0][0].get_legend_handles_labels()
    height, ncol = fig.get_figheight(), min(len(labels), 2 * len(columns))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.3 * math.ceil(len(labels) / ncol) / height, 1, 1 - 0.4 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastkd-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json=...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the JSON's folder)")
    parser.add_argument("--baseline", default=None, help="provider the speed-ups are computed for")
    args = parser.parse_args(argv)
    report = load(json.loads(args.json.read_text()), args.baseline)
    if not report.cases:
        parser.error(f"{args.json} holds no benchmark with fastkd's extra_info")
    out = args.out or args.json.parent
    out.mkdir(parents=True, exist_ok=True)
    title = f"fastkd benchmarks: {args.json.stem}"
    text = markdown(report, title)
    (out / f"{args.json.stem}.md").write_text(text)
    plot(report, out / f"{args.json.stem}.png", title)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
