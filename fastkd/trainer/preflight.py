"""Checks that run before any work: paths, model sources, the output folder, the backend.

Each failure is a ``ValueError`` with one line that names the flag and the value, so a mistyped path or
an offline hub name fails at once instead of after a model load, a 30 s hub retry or a training step.
"""

from __future__ import annotations

import os
import threading

OFFLINE_VALUES = ("1", "true", "yes", "on")


def offline() -> bool:
    """Whether the HuggingFace hub is switched off (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id (``org/name`` or ``name``)."""
    if os.path.isabs(name) or name.startswith((".", "~")) or name.endswith(("/", os.sep)):
        return True
    parts = name.replace(os.sep, "/").split("/")
    return len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0]))


def check_model_source(name: str, flag: str, what: str = "model") -> None:
    """``name`` is a saved model folder, or a hub id that can be reached (cached when offline)."""
    path, prefix = os.path.expanduser(name), f"{flag}: " if flag else ""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"{prefix}{what} folder {name!r} has no config.json (not a saved model)")
        return
    if os.path.exists(path):
        raise ValueError(f"{prefix}{what} {name!r} is a file; expected a model folder")
    if looks_local(name):
        raise ValueError(f"{prefix}{what} not found: {name!r} (no such folder)")
    if _in_hub_cache(name):
        return
    if offline():
        raise ValueError(
            f"{prefix}{what} not found: {name!r} is not a local folder nor in the HuggingFace cache, "
            "and HF_HUB_OFFLINE is set (download it first or pass a local folder)"
        )
    problem = _probe_hub(name)
    if problem is not None:
        raise ValueError(f"{prefix}{what} {name!r}: {problem}")


def _probe_hub(repo_id: str, timeout: float = 10.0) -> str | None:
    """None when the hub has ``repo_id``; otherwise why not, in a few words. One request with a hard
    deadline, instead of transformers' retries (a minute without network)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            HfApi().model_info(repo_id, timeout=timeout)
            outcome.append(None)
        except Exception as err:  # any failure is reported below, in one line
            outcome.append(err)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if not outcome:
        return f"no answer from the HuggingFace hub within {timeout:.0f} s (offline? pass a local folder)"
    err = outcome[0]
    if err is None:
        return None
    if isinstance(err, RepositoryNotFoundError):
        return "not found (not a local folder, not on the HuggingFace hub)"
    if isinstance(err, HfHubHTTPError):
        return f"the HuggingFace hub refused it ({first_line(err)})"
    return (
        f"not a local folder and the HuggingFace hub is unreachable ({first_line(err)}); "
        "pass a local folder, or download it and set HF_HUB_OFFLINE=1"
    )


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check_output_dir(path: str, flag: str = "--output") -> None:
    """``path`` is a directory or does not exist yet (never a file)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is a file; expected a directory (it is created when missing)")


def check_file(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "not found"
        raise ValueError(f"{flag}: file {what}: {path!r}")


def check_dir(path: str, flag: str) -> None:
    if not os.path.isdir(path):
        raise ValueError(f"{flag}: directory not found: {path!r}")


def check_backend(name: str, flag: str = "--backend", device: str | None = None) -> None:
    """The fastkd backend ``name`` can run the distillation losses on ``device`` (default: the one
    training uses, CUDA when available)."""
    import torch

    from fastkd.backends import resolve

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolve(name, torch.zeros(1, 2, device=device))
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{flag} {name}: {err} (training runs on {device})") from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (HF errors run to many lines), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_text(path: str) -> str:
    """The contents of the UTF-8 text file ``path``; a ValueError naming it when it is not UTF-8."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); convert it to UTF-8"
        ) from None


def check_objective(
    temperature: float | None, hard_label_weight: float | None, sinkhorn_weight: float | None
) -> None:
    """The objective's numbers, by their flags (``DistillationArguments`` checks them again, later)."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    if hard_label_weight is not None and not 0.0 <= hard_label_weight <= 1.0:
        raise ValueError(f"--hard-label-weight must be in [0, 1], got {hard_label_weight}")
    if sinkhorn_weight is not None and not sinkhorn_weight >= 0:
        raise ValueError(f"--sinkhorn-weight must be >= 0, got {sinkhorn_weight}")


def precision_arguments(precision: str) -> dict[str, bool]:
    """The ``TrainingArguments`` of ``--precision``: autocast mixed precision with fp32 master weights
    (``bf16=True`` / ``fp16=True``; nothing for fp32)."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"--precision must be fp32, bf16 or fp16, got {precision!r}")
    return {} if precision == "fp32" else {precision: True}


def check_precision(precision: str, device: str | None = None) -> None:
    """``precision`` can run on ``device`` (default: the one training uses, CUDA when available).

    fp16 needs a GPU: accelerate runs fp16 autocast (with its gradient scaler) on accelerators only and
    on CPU silently trains in fp32. bf16 needs a GPU with bf16 support (compute capability 8.0+ for
    CUDA), or the CPU (torch's CPU autocast runs bf16)."""
    import torch

    precision_arguments(precision)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp16" and device == "cpu":
        raise ValueError(
            "--precision fp16 needs a GPU (on CPU accelerate would silently train in fp32); "
            "use --precision bf16 on CPU"
        )
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name()
        raise ValueError(f"--precision bf16: the GPU {name!r} has no bf16 support; use --precision fp16")
