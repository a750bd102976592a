"""Backend resolution, in one place: which implementation runs a call.

``auto`` picks Triton for CUDA tensors (when Triton imports) and the PyTorch reference elsewhere; the
C++ extension (``cpu``/``cuda`` backends, ``fastkd._C``) takes over once it is built. The environment
variable ``FASTKD_BACKEND`` may change what ``auto`` means, never an explicit argument.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS: tuple[str, ...] = ("auto", "triton", "cuda", "cpu", "torch")
ENV_VARIABLE = "FASTKD_BACKEND"
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def extension_available() -> bool:
    return importlib.util.find_spec("fastkd._C") is not None


def _check_name(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def _auto(tensor: torch.Tensor) -> str:
    if tensor.dtype not in TRITON_DTYPES:
        return "torch"
    if tensor.is_cuda and triton_available():
        return "triton"
    return "torch"


def _check_usable(backend: str, tensor: torch.Tensor) -> None:
    if backend in ("cpu", "cuda") and not extension_available():
        raise RuntimeError(
            f"backend {backend!r} needs the C++/CUDA extension fastkd._C, which is not built in this "
            "installation; use backend='auto', 'triton' or 'torch'"
        )
    if backend != "triton":
        return
    if not triton_available():
        raise RuntimeError("backend 'triton' needs the triton package: pip install 'fastkd[triton]'")
    if not (tensor.is_cuda or triton_interpreted()):
        raise RuntimeError(
            f"backend 'triton' needs CUDA tensors (got {tensor.device}); on CPU set TRITON_INTERPRET=1 "
            "before importing triton, or use backend='torch'"
        )
    if tensor.dtype not in TRITON_DTYPES:
        raise TypeError(f"backend 'triton' takes float32, bfloat16 or float16 logits, got {tensor.dtype}")


def resolve(backend: object, tensor: torch.Tensor) -> str:
    """The concrete backend for ``tensor``: validates the name and that the backend can run here."""
    name = _check_name(backend)
    if name == "auto":
        override = os.environ.get(ENV_VARIABLE, "auto")
        name = _auto(tensor) if override == "auto" else _check_name(override)
    _check_usable(name, tensor)
    return name
