"""The ``fastkd`` command (also ``python -m fastkd``).

Each command group is a module of ``fastkd.trainer.commands`` with ``register(groups)``, which adds its
sub-commands and sets their ``handler`` (and ``extra``: the pip extra they need). Nothing heavy is
imported before the arguments are parsed: ``fastkd --help`` does not import torch or transformers.
Errors in the input exit with status 2 and one line; Ctrl-C exits with status 130 and says where the
checkpoint is and how to resume.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMAND_GROUPS = ("glue", "superglue", "lm", "info")
EXTRA_MODULES = {"trainer": ("transformers", "datasets", "accelerate", "safetensors")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastkd", description="Knowledge-distillation jobs with fastkd losses."
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{" + ",".join(COMMAND_GROUPS) + "}")
    for name in COMMAND_GROUPS:
        importlib.import_module(f"fastkd.trainer.commands.{name}").register(groups)
    return parser


def missing_extra(extra: str | None) -> str | None:
    """A one-line message when a module of the pip ``extra`` is not installed, else None."""
    missing = [m for m in EXTRA_MODULES.get(extra or "", ()) if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (
        f"this command needs the {extra} extra (missing: {', '.join(missing)}): pip install 'fastkd[{extra}]'"
    )


def _interrupted(err: KeyboardInterrupt, explicit_resume: bool) -> None:
    if not hasattr(err, "checkpoint"):  # outside training: loading, caching, evaluating
        print("\nfastkd: interrupted", file=sys.stderr)
        return
    checkpoint = err.checkpoint
    if checkpoint is None:
        print("\nfastkd: interrupted before a training step completed (no checkpoint saved)", file=sys.stderr)
        return
    hint = f", or add --resume {checkpoint}" if explicit_resume else ""
    print(
        f"\nfastkd: interrupted at step {err.step}; checkpoint saved in {checkpoint}\n"
        f"fastkd: to resume, run the same command again (it resumes from the latest checkpoint in "
        f"--output){hint}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastkd`` script; returns the exit status (0, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    message = missing_extra(getattr(args, "extra", None))
    if message is not None:
        print(f"fastkd: error: {message}", file=sys.stderr)
        return 2
    from fastkd.trainer.threads import configure_threads

    configure_threads()
    try:
        args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"fastkd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        _interrupted(err, getattr(args, "explicit_resume", False))
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
