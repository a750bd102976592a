"""Build script: the Python packages (the Triton kernels in ``kernels/`` install as ``fastkd.kernels``)
and, when torch is importable at build time, the C++ extension ``fastkd._C`` from ``csrc/``.

Install with ``pip install --no-build-isolation -e ".[dev]"`` so the build sees the installed torch
(an isolated build would download another one). ``FASTKD_BUILD_EXTENSION=0`` skips the extension.
"""

import os
import sys
from glob import glob

from setuptools import find_packages, setup


def extension_options() -> dict:
    if os.environ.get("FASTKD_BUILD_EXTENSION", "1") == "0":
        print("fastkd: FASTKD_BUILD_EXTENSION=0, skipping the C++ extension fastkd._C", file=sys.stderr)
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print(
            "fastkd: torch is not importable at build time, skipping the C++ extension fastkd._C "
            "(pure-Python install; use pip install --no-build-isolation)",
            file=sys.stderr,
        )
        return {}
    extension = CppExtension(
        "fastkd._C",
        sorted(glob("csrc/*.cpp")),
        depends=sorted(glob("csrc/*.h")),
        extra_compile_args=["-O3", "-fopenmp", "-fno-trapping-math"],
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(
    packages=[*find_packages(include=["fastkd", "fastkd.*"]), "fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
    **extension_options(),
)
