"""The GPU benchmark of the cuda backend in a few lines: per provider at each case of a pytest-benchmark
JSON, the median, GB/s on the one-pass byte count (teacher and student read once, the gradient written
once: 3·N·V·itemsize, 12.6 GB at N = 16384, V = 128256 bf16) and the fraction of the device-to-device
copy bandwidth measured here and now that this is. ``python -m bench.cuda_summary run.json [more.json]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def copy_bandwidth() -> float:
    """Bytes read + written per second of a 4 GiB device-to-device copy (median of 20)."""
    import triton.testing

    src = torch.empty(2**30, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=500, return_mode="median")
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def rows(paths: list[str], bandwidth: float) -> list[str]:
    lines = []
    for path in paths:
        if not Path(path).exists():  # a benchmark step that failed wrote nothing
            lines.append(f"| {path}: missing | — | — | — | — | — |")
            continue
        for bench in json.loads(Path(path).read_text())["benchmarks"]:
            info, median = bench["extra_info"], bench["stats"]["median"]
            one_pass = info["bytes_moved"] / median
            label = (
                f"{path.rsplit('/', 1)[-1]}: {info['divergence']} N={info['N']} V={info['V']} {info['dtype']}"
            )
            extra = "—" if info.get("extra_mem_bytes") is None else f"{info['extra_mem_bytes'] / 2**20:.0f}"
            lines.append(
                f"| {label} | {info['provider']} | {median * 1e3:.3f} | {one_pass / 1e9:.0f} | "
                f"{one_pass / bandwidth:.2f} | {extra} |"
            )
    return lines


def main(paths: list[str]) -> None:
    bandwidth = copy_bandwidth()
    print(
        f"device: {torch.cuda.get_device_name()}; copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write)"
    )
    print("| case | provider | median ms | GB/s (one-pass bytes) | fraction of copy bandwidth | extra MiB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows(paths, bandwidth)))


if __name__ == "__main__":
    main(sys.argv[1:])
