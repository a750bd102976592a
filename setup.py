"""Build script: the Python packages (the Triton kernels in ``kernels/`` install as ``fastkd.kernels``)
and the C++ extension ``fastkd._C`` from ``csrc/``, compiled against the installed torch.

``make install`` runs ``pip install --no-build-isolation -e ".[dev]"``. A plain ``pip install .``
builds in an isolated environment without torch; the build then uses the torch of the environment
being installed into (so the extension matches it), and stops with a clear message when there is
none. ``FASTKD_BUILD_EXTENSION=0`` skips the extension (a pure-Python install).

When torch has CUDA and ``nvcc`` is found, ``fastkd._C`` also holds the Hopper cluster kernels of
``csrc/cuda/`` (``backend="cuda"``). Environment: ``FASTKD_CUDA_ARCHS`` (default ``90a``; comma-separated,
each ≥ 90: the kernels use thread-block clusters and the bulk copy engine), ``NVCC_THREADS`` (default 4),
``DEBUG=1`` (``-O0 -g``, device code ``-G``), ``FASTKD_SKIP_CUDA_BUILD=1`` (CPU kernels only).
"""

import os
import shutil
import subprocess
import sys
from glob import glob

from setuptools import find_packages, setup

CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]
NO_TORCH = """
fastkd: torch is not importable at build time, so the C++ extension fastkd._C cannot be built.
  Install torch first (`make install` does the whole set-up, torch included), then run
  `pip install .` again; or set FASTKD_BUILD_EXTENSION=0 for a pure-Python install.
"""


def note(message: str) -> None:
    print(f"fastkd: {message}", file=sys.stderr)


def _installed_torch_path() -> str | None:
    """The site-packages holding torch in the environment being installed into, seen from an
    isolated build (pip hides that environment's packages from the build through PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip()


def _import_cpp_extension():
    try:
        from torch.utils import cpp_extension
    except ImportError:
        path = _installed_torch_path()
        if path is None:
            sys.exit(NO_TORCH)
        note(f"building fastkd._C against the torch in {path}")
        sys.path.append(path)
        from torch.utils import cpp_extension
    return cpp_extension


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
    cpp_extension = _import_cpp_extension()
    build = {"cmdclass": {"build_ext": cpp_extension.BuildExtension}}
    if not cuda_build_wanted():
        extension = cpp_extension.CppExtension(
            "fastkd._C",
            sorted(glob("csrc/*.cpp")),
            depends=sorted(glob("csrc/*.h")),
            extra_compile_args=CXX_FLAGS,
            extra_link_args=["-fopenmp"],
        )
        return {"ext_modules": [extension], **build}
    debug = os.environ.get("DEBUG", "0") == "1"
    cxx = (["-O0", "-g", "-fopenmp", "-fno-trapping-math"] if debug else CXX_FLAGS) + ["-DFASTKD_WITH_CUDA"]
    extension = cpp_extension.CUDAExtension(
        "fastkd._C",
        sorted(glob("csrc/*.cpp") + glob("csrc/cuda/*.cpp") + glob("csrc/cuda/*.cu")),
        depends=sorted(glob("csrc/*.h") + glob("csrc/cuda/*.h") + glob("csrc/cuda/*.cuh")),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags(debug)},
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [extension], **build}


setup(
    packages=[*find_packages(include=["fastkd", "fastkd.*"]), "fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
    **extension_options(),
)
