"""Build script: the Python packages (the Triton kernels in ``kernels/`` install as ``fastkd.kernels``)
and the C++ extension ``fastkd._C`` from ``csrc/``, compiled against the installed torch.

``make install`` runs ``pip install --no-build-isolation -e ".[dev]"``. A plain ``pip install .``
builds in an isolated environment without torch; the build then uses the torch of the environment
being installed into (so the extension matches it), and stops with a clear message when there is
none. ``FASTKD_BUILD_EXTENSION=0`` skips the extension (a pure-Python install).
"""

import os
import subprocess
import sys
from glob import glob

from setuptools import find_packages, setup

NO_TORCH = """
fastkd: torch is not importable at build time, so the C++ extension fastkd._C cannot be built.
  Install torch first (`make install` does the whole set-up, torch included), then run
  `pip install .` again; or set FASTKD_BUILD_EXTENSION=0 for a pure-Python install.
"""


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
        print(f"fastkd: building fastkd._C against the torch in {path}", file=sys.stderr)
        sys.path.append(path)
        from torch.utils import cpp_extension
    return cpp_extension


def extension_options() -> dict:
    if os.environ.get("FASTKD_BUILD_EXTENSION", "1") == "0":
        print("fastkd: FASTKD_BUILD_EXTENSION=0, skipping the C++ extension fastkd._C", file=sys.stderr)
        return {}
    cpp_extension = _import_cpp_extension()
    extension = cpp_extension.CppExtension(
        "fastkd._C",
        sorted(glob("csrc/*.cpp")),
        depends=sorted(glob("csrc/*.h")),
        extra_compile_args=["-O3", "-fopenmp", "-fno-trapping-math"],
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": cpp_extension.BuildExtension}}


setup(
    packages=[*find_packages(include=["fastkd", "fastkd.*"]), "fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
    **extension_options(),
)
