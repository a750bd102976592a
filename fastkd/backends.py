"""Backend resolution, in one place: which implementation runs a call.

``auto`` picks Triton for CUDA tensors (when Triton imports), the C++ kernels of ``fastkd._C`` for CPU
tensors (when the extension is built) and the PyTorch reference otherwise. The CUDA kernels of the
``cuda`` backend are not built yet. The environment variable ``FASTKD_BACKEND`` may change what
``auto`` means, never an explicit argument.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS: tuple[str, ...] = ("auto", "triton", "cuda", "cpu", "torch")
ENV_VARIABLE = "FASTKD_BACKEND"
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _extension_loads() -> bool:
    try:
        import fastkd._C  # noqa: F401
    except ImportError:
        return False
    return True


_EXTENSION = _extension_loads()  # once, at import: a plain constant for torch.compile to read


def extension_available() -> bool:
    """Whether the C++ extension ``fastkd._C`` is built and loads."""
    return _EXTENSION


def _check_name(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def _auto(tensor: torch.Tensor, fused: tuple[str, ...]) -> str:
    if tensor.dtype not in FUSED_DTYPES:
        return "torch"
    if tensor.is_cuda and "triton" in fused and triton_available():
        return "triton"
    if tensor.device.type == "cpu" and "cpu" in fused and extension_available():
        return "cpu"
    return "torch"


def _check_usable(backend: str, tensor: torch.Tensor) -> None:
    if backend == "cpu":
        _check_cpu(tensor)
        return
    if backend != "triton":
        return
    if not triton_available():
        raise RuntimeError("backend 'triton' needs the triton package: pip install 'fastkd[triton]'")
    if not (tensor.is_cuda or triton_interpreted()):
        raise RuntimeError(
            f"backend 'triton' needs CUDA tensors (got {tensor.device}); on CPU set TRITON_INTERPRET=1 "
            "before importing triton, or use backend='torch'"
        )
    if tensor.dtype not in FUSED_DTYPES:
        raise TypeError(f"backend 'triton' takes float32, bfloat16 or float16 logits, got {tensor.dtype}")


def _check_cpu(tensor: torch.Tensor) -> None:
    if not extension_available():
        raise RuntimeError(
            "backend 'cpu' needs the C++ extension fastkd._C, which is not built in this installation "
            "(reinstall with: pip install --no-build-isolation -e .); use backend='auto' or 'torch'"
        )
    if tensor.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, got {tensor.device}")
    if tensor.dtype not in FUSED_DTYPES:
        raise TypeError(f"backend 'cpu' takes float32, bfloat16 or float16 logits, got {tensor.dtype}")


def resolve(backend: object, tensor: torch.Tensor, fused: tuple[str, ...] = ("triton", "cpu")) -> str:
    """The concrete backend for ``tensor``: validates the name and that the backend can run here.

    ``fused`` names the fused backends the calling loss has kernels for (every loss has ``torch``);
    ``auto`` and a ``FASTKD_BACKEND`` override choose among them, an explicit other name is an error.
    """
    name = _check_name(backend)
    if name == "auto":
        override = _check_name(os.environ.get(ENV_VARIABLE, "auto"))
        name = override if override in (*fused, "torch") else _auto(tensor, fused)
    elif name not in (*fused, "torch"):
        raise ValueError(
            f"backend {name!r} has no kernels for this loss; use one of {['auto', *fused, 'torch']}"
        )
    _check_usable(name, tensor)
    return name
