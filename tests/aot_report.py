"""Compile every kernel configuration the launchers can choose, for sm_80 and sm_90, ahead of time.

Run as ``python -m tests.aot_report [FAMILY ...]`` from the repository root, in a process without
TRITON_INTERPRET (the interpreter replaces the compiler). Each kernel family lists its jobs in
``tests/aot_<family>.py`` (a ``jobs()`` function returning :class:`AotJob`); this script compiles
them in a process pool and prints one JSON record per (job, architecture) with ptxas's register count
and spill bytes, or the compile error.

Successful records are cached (``FASTKD_AOT_CACHE``, default ~/.cache/fastkd/aot) under a key of the
Triton version, the kernel's source files and the job itself, so a warm run compiles only what
changed; a failed compile is never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
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

triton.knobs.nvidia.dump_ptxas_log = True  # make_cubin prints ptxas's -v report (registers, spills)

FAMILIES: tuple[str, ...] = ("divergence", "taid", "sparse", "sinkhorn", "ranking", "rescale", "shard")
ARCHS: tuple[int, ...] = (80, 90)
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTXAS = next(
    os.path.join(BIN, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(BIN, n))
)


CACHE_DIR = os.environ.get("FASTKD_AOT_CACHE", os.path.expanduser("~/.cache/fastkd/aot"))
KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")


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


def parse_ptxas_log(log: str) -> tuple[int, int] | None:
    """(registers, spill bytes) from a ``ptxas -v`` report, or None if the text holds none."""
    used = re.search(r"Used (\d+) registers", log)
    if used is None:
        return None
    return int(used.group(1)), sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) that ptxas reports for the PTX, for the target the PTX names."""
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        command = [PTXAS, f"--gpu-name={arch}", "-v", "--regAllocOptLevel=2", path, "-o", f"{path}.cubin"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    return parse_ptxas_log(out)


def kernel_sources(module: str) -> str:
    """Digest of the Triton version, ptxas, and the source of kernel module ``module`` (a file of
    ``kernels/``) with the kernel modules it imports (``from .name import``), recursively."""
    digest = hashlib.sha256(f"{triton.__version__} {PTXAS}".encode())
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        with open(os.path.join(KERNELS_DIR, f"{name}.py")) as f:
            text = f.read()
        digest.update(name.encode() + text.encode())
        todo += re.findall(r"^from \.(\w+) import", text, re.M)
    return digest.hexdigest()


def cache_path(job: AotJob, arch: int) -> str:
    """Where the record of ``job`` on ``arch`` is cached: keyed by its kernel's sources and the job."""
    sources = kernel_sources(job.kernel.fn.__module__.rsplit(".", 1)[-1])
    fields = [job.kernel.__name__, job.label, job.signature, job.constexprs, job.num_warps, arch, sources]
    key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return os.path.join(CACHE_DIR, f"{key}.json")


def compile_job(family: str, index: int, arch: int) -> dict[str, Any]:
    job = family_jobs(family)[index]
    path = cache_path(job, arch)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    record = _compile(family, job, arch)
    if "error" not in record:
        os.makedirs(CACHE_DIR, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=CACHE_DIR, delete=False, suffix=".tmp") as f:
            json.dump(record, f)
        os.replace(f.name, path)
    return record


def _compile(family: str, job: AotJob, arch: int) -> dict[str, Any]:
    record = dict(family=family, arch=arch, warps=job.num_warps, **job.label)
    try:
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # Triton prints its own ptxas -v report: no second run
            compiled = triton.compile(
                ASTSource(fn=job.kernel, signature=job.signature, constexprs=job.constexprs),
                target=GPUTarget("cuda", arch, 32),
                options={"num_warps": job.num_warps},
            )
        record["cubin_bytes"] = len(compiled.asm["cubin"])
        usage = parse_ptxas_log(log.getvalue()) or ptxas_usage(compiled.asm["ptx"])  # a cached cubin
        record["registers"], record["spills"] = usage
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
