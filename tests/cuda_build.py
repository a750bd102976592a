"""Builds the CUDA cluster kernels for sm_90a without a GPU, for tests/test_cuda_compile.py: one nvcc
call compiles every instantiation of csrc/cuda/divergence_cluster.cu into a cubin; ptxas' report and
``cuobjdump --dump-resource-usage`` give each kernel's registers, stack, local and shared memory and
spills. Results are cached under the temp directory by a hash of the sources, flags and nvcc.
``python -m tests.cuda_build`` prints the table (the compile-time evidence of the kernels).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

from fastkd.boundary.options import DIVERGENCES

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "csrc" / "cuda" / "divergence_cluster.cu"
# The flags of setup.py's CUDA build (torch's common nvcc flags: no implicit half/bf16 conversions).
NVCC_FLAGS = [
    *COMMON_NVCC_FLAGS,
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_90a,code=sm_90a",
    "-cubin",
    "-Xptxas",
    "-v",
]
DTYPE_OF = {"f": "float32", "13__nv_bfloat16": "bfloat16", "6__half": "float16"}
KERNEL_NAME = re.compile(r"divergence_cluster_kernelILi(\d)E(f|13__nv_bfloat16|6__half)")


def nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidate = Path(home, "bin", "nvcc") if home else None
    return str(candidate) if candidate and candidate.exists() else shutil.which("nvcc")


def cuda_include() -> Path | None:
    """The CUDA runtime headers' folder, as nvcc itself reports it (nvcc may be a wrapper script)."""
    compiler = nvcc()
    if not compiler:
        return None
    out = subprocess.run([compiler, "--dryrun", "-x", "cu", "-c", os.devnull], capture_output=True, text=True)
    found = re.search(r'INCLUDES="-I([^"]+)"', out.stdout + out.stderr)
    return Path(found[1]) if found and (Path(found[1]) / "cuda_runtime.h").exists() else None


def cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    compiler = nvcc()
    beside = Path(compiler).resolve().parent / "cuobjdump" if compiler else None
    if beside and beside.exists():
        return str(beside)
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


def source_hash(*extra: str) -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix in (".h", ".cuh", ".cu", ".cpp"):
            digest.update(path.name.encode() + path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def _ptxas_records(log: str) -> dict[str, dict]:
    records, name = {}, None
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '(\w+)'", line)
        if entry:
            name = entry.group(1)
            records[name] = {}
        spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spill and name:
            records[name].update(
                stack_frame=int(spill[1]), spill_stores=int(spill[2]), spill_loads=int(spill[3])
            )
    return records


def _resource_usage(dump: str) -> dict[str, dict]:
    records, name = {}, None
    for line in dump.splitlines():
        function = re.match(r"\s*Function (\w+):", line)
        if function:
            name = function.group(1)
        usage = re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)
        if usage and name:
            records[name] = {key.lower(): int(value) for key, value in usage}
    return records


def build() -> list[dict]:
    """One record per kernel instantiation: divergence, dtype, registers, stack, shared, local, spills."""
    compiler, dumper = nvcc(), cuobjdump()
    assert compiler and dumper, "needs nvcc and cuobjdump"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    cache = Path(tempfile.gettempdir()) / f"fastkd-cubin-{source_hash(version, *NVCC_FLAGS)}"
    report = cache / "records.json"
    if report.exists():
        return json.loads(report.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    cubin = cache / "divergence_cluster.cubin"
    command = [compiler, *NVCC_FLAGS, "-I", str(ROOT / "csrc"), "-o", str(cubin), str(KERNELS)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    dump = subprocess.run([dumper, "--dump-resource-usage", str(cubin)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    ptxas, usage = _ptxas_records(out.stderr + out.stdout), _resource_usage(dump.stdout)
    records = []
    for name, resources in sorted(usage.items()):
        match = KERNEL_NAME.search(name)
        if match:
            divergence, dtype = DIVERGENCES[int(match[1])], DTYPE_OF[match[2]]
            records.append({"divergence": divergence, "dtype": dtype, **resources, **ptxas.get(name, {})})
    report.write_text(json.dumps(records))
    return records


def main() -> None:
    records = build()
    print("| divergence | dtype | registers | shared (static, B) | stack | local | spill stores/loads |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        cells = [r["divergence"], r["dtype"], r["reg"], r["shared"], r["stack"], r["local"]]
        cells.append(f"{r.get('spill_stores', '?')}/{r.get('spill_loads', '?')}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()


EMULATION = ROOT / "tests" / "cuda_emulation"


def build_emulation() -> Path:
    """The cluster kernels compiled for the CPU (g++) over tests/cuda_emulation/cluster_common.cuh, as
    a shared library with ``emu_launch``; cached under the temp directory by source hash."""
    include = cuda_include()
    assert include is not None and shutil.which("g++"), "needs g++ and the CUDA headers"
    key = source_hash(*(p.read_text() for p in sorted(EMULATION.glob("*.c*"))))
    work = Path(tempfile.gettempdir()) / f"fastkd-emulation-{key}"
    library = work / "emulation.so"
    if library.exists():
        return library
    cuda_dir = work / "csrc" / "cuda"
    cuda_dir.mkdir(parents=True, exist_ok=True)
    for header in (ROOT / "csrc").glob("*.h"):
        shutil.copy(header, work / "csrc")
    for source in (*(ROOT / "csrc" / "cuda").glob("*.cuh"), ROOT / "csrc" / "cuda" / "divergence_args.h"):
        shutil.copy(source, cuda_dir)
    for source in EMULATION.glob("*.c*"):  # the CPU cluster_common.cuh replaces the device one
        shutil.copy(source, cuda_dir)
    command = ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-attributes", f"-I{include}"]
    command += [str(cuda_dir / "harness.cpp"), "-o", str(library.with_suffix(".tmp")), "-lpthread"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    library.with_suffix(".tmp").rename(library)
    return library
