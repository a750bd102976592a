"""Turn a pytest-benchmark JSON of the ``bench/bench_*.py`` files into markdown tables and a PNG plot.

``python -m bench.report out.json [--out DIR] [--baseline PROVIDER]`` (also ``fastkd-bench``) writes
DIR/<name>.md and DIR/<name>.png, <name> being the JSON's file name without its suffix, DIR the
JSON's folder by default, and prints the markdown. One table per family (the bench file a result came
from: divergences, taid, ranking, ...), one row per (case, N, V, dtype, provider) that ran: the median
forward+backward time, the throughput the family records (GB/s: bytes that must move over the
median; TFLOP/s where recorded), the peak memory beyond the inputs, and the baseline's speed-up over
that provider (provider median / baseline median). A family's baseline is its first fastkd provider
unless ``--baseline`` names one of its providers. A metric no result of the family records is left
out; one missing for a single result shows as "—".
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.shapes import bytes_moved, gbps

PROVIDER_ORDER = ("fastkd-triton", "fastkd-cuda", "fastkd-cpu", "torch-eager", "torch-compile", "liger")
MISSING = "—"
Case = tuple[str, int, int, str]
# (column suffix, Result attribute, scale, significant digits)
METRICS = (("ms", "median_s", 1e3, 4), ("GB/s", "gbps", 1.0, 3), ("TFLOP/s", "tflops", 1.0, 3))
MEMORY = ("MiB", "peak_mem_bytes", 1 / 2**20, 3)


@dataclass(frozen=True)
class Result:
    """One provider's measurement of one case."""

    median_s: float
    gbps: float | None
    peak_mem_bytes: int | None
    tflops: float | None = None


@dataclass
class Family:
    """One bench file's cases with their results by provider, its providers in order, its baseline."""

    cases: dict[Case, dict[str, Result]] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    baseline: str | None = None


@dataclass
class Report:
    """Every family by name and the devices the results name."""

    families: dict[str, Family] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    loads: list[tuple[float, int]] = field(default_factory=list)  # (load average, cores) per result


def family_of(entry: dict[str, Any]) -> str:
    """``extra_info["family"]``, else the bench file's name (``bench/bench_taid.py::...`` -> ``taid``)."""
    if entry.get("extra_info", {}).get("family"):
        return str(entry["extra_info"]["family"])
    match = re.search(r"bench_(\w+)\.py::", entry.get("fullname", ""))
    return match.group(1) if match else "benchmarks"


def _result(entry: dict[str, Any]) -> tuple[Case, str, Result] | None:
    info, stats = entry.get("extra_info", {}), entry.get("stats") or {}
    n = info.get("N", info.get("B"))
    if any(key not in info for key in ("provider", "V", "dtype")) or n is None or not stats.get("median"):
        return None
    case = (str(info.get("divergence") or info.get("case") or family_of(entry)), int(n), int(info["V"]))
    case += (info["dtype"],)
    median = float(stats["median"])
    nbytes = info.get("bytes_moved") or (bytes_moved(*case[1:]) if "divergence" in info else None)
    rate = gbps(nbytes, median) if nbytes else None
    return case, info["provider"], Result(median, rate, info.get("peak_mem_bytes"), info.get("tflops"))


def _provider_key(provider: str) -> tuple[int, str]:
    known = PROVIDER_ORDER.index(provider) if provider in PROVIDER_ORDER else len(PROVIDER_ORDER)
    return known, provider


def load(data: dict[str, Any], baseline: str | None = None) -> Report:
    """Collect the benchmarks of a pytest-benchmark JSON document by family, skipping entries without
    our extra_info."""
    report = Report()
    for entry in data.get("benchmarks", []):
        parsed = _result(entry)
        if parsed is None:
            continue
        case, provider, result = parsed
        family = report.families.setdefault(family_of(entry), Family())
        family.cases.setdefault(case, {})[provider] = result
        info = entry["extra_info"]
        if info.get("device") and info["device"] not in report.devices:
            report.devices.append(info["device"])
        if info.get("load_average") is not None and info.get("cores"):
            report.loads.append((float(info["load_average"]), int(info["cores"])))
    report.families = dict(sorted(report.families.items()))
    for family in report.families.values():
        family.cases = dict(sorted(family.cases.items()))
        family.providers = sorted({p for r in family.cases.values() for p in r}, key=_provider_key)
        fastkd = [p for p in family.providers if p.startswith("fastkd")]
        family.baseline = baseline if baseline in family.providers else (fastkd[0] if fastkd else None)
    everyone = {p for family in report.families.values() for p in family.providers}
    if baseline is not None and baseline not in everyone:
        raise ValueError(f"baseline {baseline!r} is not among the providers {sorted(everyone)}")
    return report


def _number(value: float | None, digits: int) -> str:
    """``value`` to ``digits`` significant digits (whole numbers from 10^digits on), or the missing mark."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def _metrics(family: Family) -> list[tuple[str, str, float, int]]:
    """The metrics (ms, GB/s, TFLOP/s, MiB) that at least one result of the family records."""
    results = [r for by_provider in family.cases.values() for r in by_provider.values()]
    return [m for m in (*METRICS, MEMORY) if any(getattr(r, m[1]) is not None for r in results)]


def _speed_up(family: Family, results: dict[str, Result], provider: str) -> str:
    base = results.get(family.baseline or "")
    if provider == family.baseline:
        return "baseline"
    return f"{results[provider].median_s / base.median_s:.2f}×" if base else MISSING


def table(family: Family) -> list[str]:
    """One family's markdown table: one row per (case, provider), the metrics the family records and
    the baseline's speed-up over that provider (provider median / baseline median)."""
    metrics = _metrics(family)
    header = ["case", "N", "V", "dtype", "provider"] + [suffix for suffix, *_ in metrics]
    header += [f"{family.baseline} speed-up"] if family.baseline else []
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i in (0, 3, 4) else "---:" for i in range(len(header))) + "|",
    ]
    for case, results in family.cases.items():
        for provider in (p for p in family.providers if p in results):
            result = results[provider]
            cells = [case[0], str(case[1]), str(case[2]), case[3], provider]
            for _, attribute, scale, digits in metrics:
                value = getattr(result, attribute)
                cells.append(_number(None if value is None else value * scale, digits))
            cells += [_speed_up(family, results, provider)] if family.baseline else []
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def load_note(loads: Sequence[tuple[float, int]]) -> str:
    """One sentence on the machine's load during the run ("" when not recorded)."""
    if not loads:
        return ""
    low, high, cores = min(x for x, _ in loads), max(x for x, _ in loads), max(c for _, c in loads)
    note = f" Load average {low:.1f}-{high:.1f} on {cores} cores"
    if high > cores:
        return note + ": a loaded machine, so CPU times include waiting for a core (compare ratios only)."
    return note + "."


def markdown(report: Report, title: str) -> str:
    """The report as markdown: a short legend, then one section and table per family."""
    lines = [
        f"# {title}",
        "",
        f"Device: {', '.join(report.devices) or 'unknown'}.{load_note(report.loads)} ms: median "
        "forward+backward; GB/s: bytes the loss must move over the median; MiB: peak memory beyond the "
        "inputs; speed-up: the provider's median / the baseline's median.",
    ]
    for name, family in report.families.items():
        lines += ["", f"## {name}", "", *table(family)]
    return "\n".join(lines) + "\n"


def _panel(ax: Any, family: Family, series: tuple[str, int, str], colours: dict[str, str]) -> None:
    case_name, v, dtype = series
    selected = {c: r for c, r in family.cases.items() if (c[0], c[2], c[3]) == series}
    for provider in family.providers:
        points = sorted((c[1], r[provider].median_s * 1e3) for c, r in selected.items() if provider in r)
        if points:
            ax.plot(*zip(*points, strict=True), "o-", color=colours[provider], label=provider)
    tokens = sorted({c[1] for c in selected})
    ax.set(title=f"{case_name}, V={v}, {dtype}", xlabel="N tokens", ylabel="ms", yscale="log")
    ax.set_xscale("log", base=2)
    ax.set_xticks(tokens, [str(n) for n in tokens])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.grid(True, alpha=0.3)


def legend_entries(axes: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Every distinct label of every panel (first handle of each), in order of first appearance."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def plot(report: Report, path: Path, title: str) -> None:
    """Median time against N, one line per provider, one row of panels per (family, case), one panel
    per (V, dtype) of that case; one legend below for the providers of every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (family, sorted({(c[0], c[2], c[3]) for c in family.cases if c[0] == name}))
        for family in report.families.values()
        for name in sorted({c[0] for c in family.cases})
    ]
    ncols = max(len(series) for _, series in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4 * ncols, 3.2 * len(rows)), squeeze=False)
    providers = sorted({p for f in report.families.values() for p in f.providers}, key=_provider_key)
    colours = {p: f"C{i}" for i, p in enumerate(providers)}
    for i, (family, series) in enumerate(rows):
        for j in range(ncols):
            if j < len(series):
                _panel(axes[i][j], family, series[j], colours)
            else:
                axes[i][j].axis("off")
    entries = sorted(zip(*legend_entries(axes.flat), strict=True), key=lambda e: _provider_key(e[1]))
    handles, labels = [h for h, _ in entries], [label for _, label in entries]
    height, ncol = fig.get_figheight(), min(len(labels), 2 * ncols)
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
    if not report.families:
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
