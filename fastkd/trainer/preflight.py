"""Checks that run before any work: paths, model sources, the output folder, the backend.

Each failure is a ``ValueError`` with one line that names the flag and the value, so a mistyped path or
an offline hub name fails at once instead of after a model load, a 30 s hub retry or a training step.
"""

from __future__ import annotations

import os

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
    if offline() and not _in_hub_cache(name):
        raise ValueError(
            f"{prefix}{what} not found: {name!r} is not a local folder nor in the HuggingFace cache, "
            "and HF_HUB_OFFLINE is set (download it first or pass a local folder)"
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
