"""Backend resolution, in one place: which implementation runs a call.

``auto`` picks Triton for CUDA tensors (when Triton imports), the C++ kernels of ``fastkd._C`` for CPU
tensors (when the extension is built) and the PyTorch reference otherwise. The ``cuda`` backend (the
Hopper cluster kernels of ``csrc/cuda/``, divergence family only) is opt-in: ``auto`` takes it only
for the combinations in :data:`CUDA_WINNERS`, where a committed GPU benchmark showed it faster than
Triton. The environment variable ``FASTKD_BACKEND`` may change what ``auto`` means, never an explicit
argument.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import torch

BACKENDS: tuple[str, ...] = ("auto", "triton", "cuda", "cpu", "torch")
ENV_VARIABLE = "FASTKD_BACKEND"
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DIVERGENCE_FUSED: tuple[str, ...] = ("triton", "cuda", "cpu")  # the divergence family's fused backends
CUDA_BUILD_HINT = (
    "reinstall on a machine with nvcc and a CUDA build of torch: pip install --no-build-isolation -e . "
    "(FASTKD_CUDA_ARCHS=90a is the default target)"
)


class CudaWin(NamedTuple):
    """One measured win of the cuda backend over Triton: a divergence, a dtype, V in [v_min, v_max], on
    a GPU whose name contains ``gpu``; ``source`` names the committed result in bench/results/."""

    divergence: str
    dtype: torch.dtype
    v_min: int
    v_max: int
    gpu: str
    source: str


# The one table of measured winners. Empty: no GPU benchmark of the cuda backend is committed yet.
CUDA_WINNERS: tuple[CudaWin, ...] = ()


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


def _cuda_kernels_built() -> bool:
    if not _EXTENSION:
        return False
    import fastkd._C

    return bool(getattr(fastkd._C, "cuda_kernels", False))


_EXTENSION = _extension_loads()  # once, at import: plain constants for torch.compile to read
_CUDA_KERNELS = _cuda_kernels_built()


def extension_available() -> bool:
    """Whether the C++ extension ``fastkd._C`` is built and loads."""
    return _EXTENSION


def cuda_kernels_available() -> bool:
    """Whether ``fastkd._C`` was built with the CUDA cluster kernels (``backend="cuda"``)."""
    return _CUDA_KERNELS


def cuda_measured_faster(divergence: str | None, tensor: torch.Tensor) -> bool:
    """Whether :data:`CUDA_WINNERS` holds a win for ``divergence`` at ``tensor``'s dtype, V and GPU."""
    if divergence is None or not tensor.is_cuda:
        return False
    wins = [w for w in CUDA_WINNERS if w.divergence == divergence and w.dtype == tensor.dtype]
    wins = [w for w in wins if w.v_min <= tensor.shape[-1] <= w.v_max]
    return bool(wins) and any(w.gpu in torch.cuda.get_device_name(tensor.device) for w in wins)


def _check_name(backend: object) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def _auto(tensor: torch.Tensor, fused: tuple[str, ...], divergence: str | None) -> str:
    if tensor.dtype not in FUSED_DTYPES:
        return "torch"
    if "cuda" in fused and cuda_kernels_available() and cuda_measured_faster(divergence, tensor):
        return "cuda"
    if tensor.is_cuda and "triton" in fused and triton_available():
        return "triton"
    if tensor.device.type == "cpu" and "cpu" in fused and extension_available():
        return "cpu"
    return "torch"


def _check_usable(backend: str, tensor: torch.Tensor) -> None:
    if backend == "cpu":
        _check_cpu(tensor)
        return
    if backend == "cuda":
        _check_cuda(tensor)
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


def _check_cuda(tensor: torch.Tensor) -> None:
    if not cuda_kernels_available():
        raise RuntimeError(
            "backend 'cuda' needs fastkd._C built with its CUDA kernels, which this installation lacks "
            f"(torch without CUDA or no nvcc at build time); {CUDA_BUILD_HINT}; or use backend='triton'"
        )
    if not tensor.is_cuda:
        raise RuntimeError(f"backend 'cuda' needs CUDA tensors, got {tensor.device}")
    major, minor = torch.cuda.get_device_capability(tensor.device)
    if major < 9:
        raise RuntimeError(
            f"backend 'cuda' runs thread-block clusters of sm_90 (Hopper) or newer; {tensor.device} is "
            f"sm_{major}{minor}: use backend='triton'"
        )
    if tensor.dtype not in FUSED_DTYPES:
        raise TypeError(f"backend 'cuda' takes float32, bfloat16 or float16 logits, got {tensor.dtype}")


def resolve(
    backend: object,
    tensor: torch.Tensor,
    fused: tuple[str, ...] = ("triton", "cpu"),
    divergence: str | None = None,
) -> str:
    """The concrete backend for ``tensor``: validates the name and that the backend can run here.

    ``fused`` names the fused backends the calling loss has kernels for (every loss has ``torch``);
    ``auto`` and a ``FASTKD_BACKEND`` override choose among them, an explicit other name is an error.
    ``divergence`` (the divergence family) lets ``auto`` consult :data:`CUDA_WINNERS`.
    """
    name = _check_name(backend)
    if name == "auto":
        override = _check_name(os.environ.get(ENV_VARIABLE, "auto"))
        name = override if override in (*fused, "torch") else _auto(tensor, fused, divergence)
    elif name not in (*fused, "torch"):
        raise ValueError(
            f"backend {name!r} has no kernels for this loss; use one of {['auto', *fused, 'torch']}"
        )
    _check_usable(name, tensor)
    return name
