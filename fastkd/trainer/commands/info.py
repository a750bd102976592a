"""``fastkd info``: versions, the backends built and usable here, and the thread settings."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
from typing import Any

from fastkd.trainer.commands.common import set_handler

PACKAGES = ("torch", "triton", "transformers", "datasets", "accelerate", "safetensors", "tokenizers")


def register(groups: Any) -> None:
    p = groups.add_parser("info", help="versions, backends built and usable here, thread settings")
    set_handler(p, print_info, extra=None)


def versions() -> dict[str, str]:
    """fastkd's, Python's and the installed dependencies' versions ('not installed' when absent)."""
    import fastkd

    out = {"fastkd": fastkd.__version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def backends() -> dict[str, str]:
    """One line per backend: whether it is built and whether it runs here (``backend_report`` if any)."""
    import torch

    from fastkd import backends as b

    report = getattr(b, "backend_report", None)
    if report is not None:
        return {str(k): str(v) for k, v in dict(report()).items()}
    cuda = torch.cuda.is_available()
    triton = "not installed"
    if b.triton_available():
        triton = (
            "usable (CUDA)"
            if cuda
            else "interpreted (TRITON_INTERPRET=1)"
            if b.triton_interpreted()
            else ("installed, needs a CUDA device")
        )
    cpu = (
        "usable (fastkd._C built)"
        if b.extension_available()
        else ("not built: pip install --no-build-isolation -e .")
    )
    return {
        "torch": "usable (the PyTorch reference)",
        "cpu": cpu,
        "triton": triton,
        "cuda": "kernels not built in this version",
        "auto on CPU tensors": "cpu" if b.extension_available() else "torch",
        "auto on CUDA tensors": "triton" if b.triton_available() else "torch",
        "CUDA device": torch.cuda.get_device_name(0) if cuda else "none",
    }


def info() -> dict[str, dict[str, Any]]:
    from fastkd.trainer.threads import thread_report

    return {"versions": versions(), "backends": backends(), "threads": thread_report()}


def print_info(a: argparse.Namespace) -> None:
    for section, values in info().items():
        print(f"{section}:")
        width = max(len(k) for k in values)
        for key, value in values.items():
            print(f"  {key:<{width}}  {value}")
