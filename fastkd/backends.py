"""Backend resolution, in one place: which implementation runs a call.

``auto`` picks Triton for CUDA tensors (when Triton imports), the C++ kernels of ``fastkd._C`` for CPU
tensors (when the extension is built) and the PyTorch reference otherwise. The CUDA kernels of the
``cuda`` backend are not built yet. The environment variable ``FASTKD_BACKEND`` may change what
``auto`` means, never an explicit argument. The first CPU call where ``auto`` falls back because the
extension is not built warns once, with the reinstall command; :func:`backend_report` says what is
built and usable here.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

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


def check_backend_name(backend: object) -> str:
    """``backend`` itself when it names a backend, else a ValueError listing them."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


REINSTALL = "pip install --no-build-isolation -e ."
_warned_fallback = False


def _warn_cpu_fallback() -> None:
    """Once per process: ``auto`` runs the PyTorch reference on CPU because fastkd._C is not built."""
    global _warned_fallback
    if _warned_fallback or torch.compiler.is_compiling():
        return
    _warned_fallback = True
    warnings.warn(
        "fastkd: the C++ extension fastkd._C is not built, so backend='auto' runs the PyTorch "
        "reference on CPU (about 20x slower). A plain `pip install -e .` skips it (build isolation "
        f"hides torch); reinstall with: {REINSTALL}",
        RuntimeWarning,
        stacklevel=4,
    )


def _auto(tensor: torch.Tensor, fused: tuple[str, ...]) -> str:
    if tensor.dtype not in FUSED_DTYPES:
        return "torch"
    if tensor.is_cuda and "triton" in fused and triton_available():
        return "triton"
    if tensor.device.type == "cpu" and "cpu" in fused:
        if extension_available():
            return "cpu"
        _warn_cpu_fallback()
    return "torch"


def backend_report() -> dict[str, object]:
    """What is built and usable here, for ``fastkd info``: triton importable and interpreted, the C++
    extension built (and the SIMD clone its row kernels run where the CPU is known), torch threads."""
    return {
        "torch": torch.__version__,
        "triton_available": triton_available(),
        "triton_interpreted": triton_interpreted(),
        "cuda_available": torch.cuda.is_available(),
        "extension_built": extension_available(),
        "extension_simd": _simd_clone() if extension_available() else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "default_backend": os.environ.get(ENV_VARIABLE, "auto"),
    }


def _simd_clone() -> str:
    """The target clone fastkd._C picks on this CPU: x86-64-v3 (AVX2 + FMA) where the CPU has both
    (read from /proc/cpuinfo on Linux x86-64), else the baseline; "unknown" elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return "unknown"
    if flags is None:
        return "unknown"
    return "x86-64-v3 (AVX2+FMA)" if {"avx2", "fma", "bmi2"} <= set(flags) else "x86-64 baseline"


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
    name = check_backend_name(backend)
    if name == "auto":
        override = check_backend_name(os.environ.get(ENV_VARIABLE, "auto"))
        name = override if override in (*fused, "torch") else _auto(tensor, fused)
    elif name not in (*fused, "torch"):
        raise ValueError(
            f"backend {name!r} has no kernels for this loss; use one of {['auto', *fused, 'torch']}"
        )
    _check_usable(name, tensor)
    return name
