"""The CUDA cluster kernels compile for sm_90a on a machine without a GPU (nvcc is enough), every
instantiation (divergence × dtype; the cluster size is a launch attribute, not a template), with no
register spills, no local memory, registers within __launch_bounds__(512, 1) and shared memory that
leaves the launch plan its room; and the torch-facing launcher passes the host compiler. The build is
tests/cuda_build.py, cached by source hash."""

from __future__ import annotations

import hashlib
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from fastkd.boundary.options import DIVERGENCES
from fastkd.ops.cuda_plan import SMEM_PER_BLOCK, STATIC_SMEM, THREADS, plan_for
from tests import cuda_build

pytestmark = pytest.mark.skipif(
    cuda_build.nvcc() is None or cuda_build.cuobjdump() is None,
    reason="needs nvcc (CUDA toolkit) and cuobjdump (toolkit or the triton wheel) to build sm_90a cubins",
)
REGISTER_FILE = 65536
RESERVED_SMEM = 1024  # per block on sm_90, counted in cuobjdump's SHARED


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return cuda_build.build()


def test_every_instantiation_is_built(records):
    built = {(r["divergence"], r["dtype"]) for r in records}
    assert built == {(d, t) for d in DIVERGENCES for t in ("float32", "bfloat16", "float16")}
    assert len(records) == len(built)


def test_no_spills_no_local_memory_registers_within_the_launch_bounds(records):
    for record in records:
        assert record["stack"] == 0 and record["local"] == 0, record
        assert record["spill_stores"] == 0 and record["spill_loads"] == 0 and record["stack_frame"] == 0, (
            record
        )
        assert record["reg"] <= REGISTER_FILE // THREADS, record


def test_shared_memory_fits_the_largest_plan(records):
    largest = {
        itemsize: max(plan_for(v, itemsize).smem_bytes for v in (2, 128256, 230000)) for itemsize in (2, 4)
    }
    for record in records:
        assert RESERVED_SMEM <= record["shared"] <= STATIC_SMEM, record  # the plan's bound on static memory
        itemsize = 4 if record["dtype"] == "float32" else 2
        assert record["shared"] - RESERVED_SMEM + largest[itemsize] <= SMEM_PER_BLOCK, (record, largest)


def test_the_kernels_share_the_cpu_kernels_terms():
    """The per-element maths is terms<DIV> of csrc/divergence_row.h, compiled for host and device."""
    kernel = (cuda_build.ROOT / "csrc" / "cuda" / "divergence_cluster.cuh").read_text()
    args = (cuda_build.ROOT / "csrc" / "cuda" / "divergence_args.h").read_text()
    row = (cuda_build.ROOT / "csrc" / "divergence_row.h").read_text()
    assert '#include "../divergence_row.h"' in args and '#include "divergence_args.h"' in kernel
    assert kernel.count("terms<DIV>(") == 2 and "FASTKD_HD void terms(" in row


def test_the_torch_launcher_passes_the_host_compiler():
    """csrc/cuda/divergence_cuda.cpp and csrc/bindings.cpp as the CUDA build compiles them, against
    torch's CUDA headers (-fsyntax-only; the generated c10/cuda/impl/cuda_cmake_macros.h that CPU
    wheels lack is stubbed)."""
    torch = pytest.importorskip("torch")
    include = Path(torch.__file__).parent / "include"
    cuda_include = cuda_build.cuda_include()
    if cuda_include is None or not (include / "c10" / "cuda" / "CUDAGuard.h").exists():
        pytest.skip("torch's c10/cuda headers or the CUDA runtime headers are missing")
    sources = [
        cuda_build.ROOT / "csrc" / "cuda" / "divergence_cuda.cpp",
        cuda_build.ROOT / "csrc" / "bindings.cpp",
    ]
    key = hashlib.sha256(torch.__version__.encode() + cuda_build.source_hash().encode())
    stamp = Path(tempfile.gettempdir()) / f"fastkd-launcher-{key.hexdigest()[:16]}.ok"
    if stamp.exists():
        return
    stub = Path(tempfile.mkdtemp()) / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    includes = [
        include,
        include / "torch" / "csrc" / "api" / "include",
        stub.parent.parent.parent,
        cuda_include,
    ]
    command = [
        "c++",
        "-std=c++20",
        "-fsyntax-only",
        "-fopenmp",
        "-DFASTKD_WITH_CUDA",
        "-DTORCH_EXTENSION_NAME=_C",
    ]
    command += [f"-I{path}" for path in (*includes, sysconfig.get_paths()["include"])]
    for source in sources:
        out = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (source, out.stderr[-4000:])
    stamp.write_text("ok\n")
