"""Build script: the Python packages; the Triton kernels in ``kernels/`` install as ``fastkd.kernels``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["fastkd", "fastkd.*"]), "fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
)
