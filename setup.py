"""Build script: the Python packages, with the Triton kernels in ``kernels/`` installed as ``fastkd.kernels``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fastkd", "fastkd.*"]) + ["fastkd.kernels", "bench"],
    package_dir={"fastkd.kernels": "kernels"},
)
