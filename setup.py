"""Build script: the Python packages (the Triton kernels in ``kernels/`` install as ``fastkd.kernels``)
and, when torch is importable at build time, the C++ extension ``fastkd._C`` from ``csrc/``.

Install with ``pip install --no-build-isolation -e ".[dev]"`` so the build sees the installed torch
(an isolated build would download another one). ``FASTKD_BUILD_EXTENSION=0`` skips the extension.

When torch has CUDA and ``nvcc`` is found, ``fastkd._C`` also holds the Hopper cluster kernels of
``csrc/cuda/`` (``backend="cuda"``). Environment: ``FASTKD_CUDA_ARCHS`` (default ``90a``; comma-separated,
each ≥ 90: the kernels use thread-block clusters and the bulk copy engine), ``NVCC_THREADS`` (default 4),
``DEBUG=1`` (``-O0 -g``, device code ``-G``), ``FASTKD_SKIP_CUDA_BUILD=1`` (CPU kernels only).
"""

import os
import shutil
import sys
from glob import glob

from setuptools import find_packages, setup

CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]


def note(message: str) -> None:
    print(f"fastkd: {message}", file=sys.stderr)


def cuda_build_wanted() -> bool:
    """Whether to build the CUDA kernels: torch has CUDA, nvcc is found, and no skip was asked for."""
    if os.environ.get("FASTKD_SKIP_CUDA_BUILD", "0") == "1":
        note("FASTKD_SKIP_CUDA_BUILD=1, building the CPU kernels only")
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        return False
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        note("torch has CUDA but nvcc is not found (set CUDA_HOME): building the CPU kernels only")
        return False
    return True


def nvcc_flags(debug: bool) -> list[str]:
    names = os.environ.get("FASTKD_CUDA_ARCHS", "90a").replace(";", ",").split(",")
    archs = [a.strip() for a in names if a.strip()]
    for arch in archs:
        if not arch.rstrip("a").isdigit() or int(arch.rstrip("a")) < 90:
            raise SystemExit(
                f"fastkd: FASTKD_CUDA_ARCHS={arch!r}: the cluster kernels need sm_90 or newer (e.g. 90a)"
            )
    flags = ["-std=c++17", "--threads", os.environ.get("NVCC_THREADS", "4"), "-DFASTKD_WITH_CUDA"]
    flags += ["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"]
    return flags + [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in archs]


def extension_options() -> dict:
    if os.environ.get("FASTKD_BUILD_EXTENSION", "1") == "0":
        note("FASTKD_BUILD_EXTENSION=0, skipping the C++ extension fastkd._C")
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        note(
            "torch is not importable at build time, skipping the C++ extension fastkd._C "
            "(pure-Python install; use pip install --no-build-isolation)"
        )
        return {}
    if not cuda_build_wanted():
        extension = CppExtension(
            "fastkd._C",
            sorted(glob("csrc/*.cpp")),
            depends=sorted(glob("csrc/*.h")),
            extra_compile_args=CXX_FLAGS,
            extra_link_args=["-fopenmp"],
        )
        return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}
    debug = os.environ.get("DEBUG", "0") == "1"
    cxx = (["-O0", "-g", "-fopenmp", "-fno-trapping-math"] if debug else CXX_FLAGS) + ["-DFASTKD_WITH_CUDA"]
    extension = CUDAExtension(
        "fastkd._C",
        sorted(glob("csrc/*.cpp") + glob("csrc/cuda/*.cpp") + glob("csrc/cuda/*.cu")),
        depends=sorted(glob("csrc/*.h") + glob("csrc/cuda/*.h") + glob("csrc/cuda/*.cuh")),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags(debug)},
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(
    packages=[*find_packages(include=["fastkd", "fastkd.*"]), "fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
    **extension_options(),
)
