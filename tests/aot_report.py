"""Compile every kernel configuration the launchers can choose, for sm_80 and sm_90, ahead of time.

Run as ``python -m tests.aot_report [FAMILY ...]`` from the repository root, in a process without
TRITON_INTERPRET (the interpreter replaces the compiler). Each kernel family lists its jobs in
``tests/aot_<family>.py`` (a ``jobs()`` function returning :class:`AotJob`); this script compiles
them in a process pool and prints one JSON record per (job, architecture) with ptxas's register count
and spill bytes, or the compile error.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

FAMILIES: tuple[str, ...] = ("divergence", "taid", "sparse", "sinkhorn", "ranking", "rescale", "shard")
ARCHS: tuple[int, ...] = (80, 90)
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTXAS = next(
    os.path.join(BIN, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(BIN, n))
)


@dataclass(frozen=True)
class AotJob:
    """One kernel configuration: ``label`` identifies it in the records (e.g. divergence, dtype)."""

    label: dict[str, Any]
    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int


def family_jobs(family: str) -> list[AotJob]:
    return importlib.import_module(f"tests.aot_{family}").jobs()


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) that ptxas reports for the PTX, for the target the PTX names."""
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        command = [PTXAS, f"--gpu-name={arch}", "-v", "--regAllocOptLevel=2", path, "-o", f"{path}.cubin"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out))
    return registers, spills


def compile_job(family: str, index: int, arch: int) -> dict[str, Any]:
    job = family_jobs(family)[index]
    record = dict(family=family, arch=arch, warps=job.num_warps, **job.label)
    try:
        compiled = triton.compile(
            ASTSource(fn=job.kernel, signature=job.signature, constexprs=job.constexprs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": job.num_warps},
        )
        record["cubin_bytes"] = len(compiled.asm["cubin"])
        record["registers"], record["spills"] = ptxas_usage(compiled.asm["ptx"])
    except Exception as error:  # reported to the test, which fails on it
        record["error"] = f"{type(error).__name__}: {error}"
    return record


def main() -> None:
    tasks = [
        (family, index, arch)
        for family in sys.argv[1:] or FAMILIES
        for index in range(len(family_jobs(family)))
        for arch in ARCHS
    ]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for record in pool.starmap(compile_job, tasks):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
