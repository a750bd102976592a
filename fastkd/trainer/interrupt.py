"""Interruptions and resuming: Ctrl-C saves a checkpoint, a rerun continues from it.

The first SIGINT during ``train`` asks the trainer to finish the current optimizer step, save a
checkpoint (model, optimizer, scheduler, RNG, trainer state and the loss's own state, e.g. TAID's t)
and stop; a second SIGINT stops at once. A ``KeyboardInterrupt`` raised inside a step (a callback, a
signal outside the main thread) saves the state at the last completed step. Either way the run ends
with :class:`TrainingInterrupted`, which the command line turns into a short message and status 130.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by an interrupt; ``checkpoint`` is where it can resume from (or None)."""

    def __init__(self, checkpoint: str | None, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.checkpoint, self.step = checkpoint, step


class _StopOnRequest(TrainerCallback):
    """Turns a pending interrupt request into 'save a checkpoint and stop' at the end of the step."""

    def __init__(self) -> None:
        self.requested = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


@contextmanager
def _sigint_requests_stop(stop: _StopOnRequest) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print(
            "\nfastkd: interrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit now)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interruptible_train(trainer: Trainer, resume_from_checkpoint: str | None = None) -> Any:
    """``trainer.train(resume_from_checkpoint)``; an interrupt saves a checkpoint and raises
    :class:`TrainingInterrupted` naming it."""
    stop = _StopOnRequest()
    trainer.add_callback(stop)
    try:
        with _sigint_requests_stop(stop):
            result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except KeyboardInterrupt:
        if stop.requested:  # second Ctrl-C: no new save, the latest checkpoint (if any) stays
            raise TrainingInterrupted(
                get_last_checkpoint_or_none(trainer.args.output_dir), trainer.state.global_step
            ) from None
        raise TrainingInterrupted(_save_now(trainer), trainer.state.global_step) from None
    finally:
        trainer.remove_callback(stop)
    state = trainer.state
    if stop.requested and state.global_step < state.max_steps:
        raise TrainingInterrupted(_checkpoint_dir(trainer), state.global_step)
    return result


def _checkpoint_dir(trainer: Trainer) -> str:
    return os.path.join(trainer.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


def _save_now(trainer: Trainer) -> str | None:
    if trainer.state.global_step == 0:
        return None
    trainer._save_checkpoint(trainer.model, trial=None)
    return _checkpoint_dir(trainer)


def get_last_checkpoint_or_none(output: str) -> str | None:
    """The newest ``checkpoint-N`` folder under ``output``, or None."""
    return get_last_checkpoint(output) if os.path.isdir(output) else None


def resume_point(output: str, resume: str) -> str | None:
    """The checkpoint a run continues from: ``resume`` is ``"auto"`` (the latest checkpoint in
    ``output``, if any; said on stderr), ``"never"`` (start over: the checkpoints in ``output`` are
    deleted, so that a later ``"auto"`` cannot pick a stale one) or a checkpoint folder."""
    if resume == "never":
        remove_checkpoints(output)
        return None
    if resume != "auto":
        if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
            raise ValueError(f"--resume: {resume!r} is not a checkpoint folder (no trainer_state.json)")
        return resume
    latest = get_last_checkpoint_or_none(output)
    if latest is not None:
        print(
            f"fastkd: resuming from {latest} (the latest checkpoint in {output}; --no-resume starts over)",
            file=sys.stderr,
        )
    return latest


def remove_checkpoints(output: str) -> None:
    """Delete the ``checkpoint-N`` folders of a finished run (optimizer states; the model is saved)."""
    for folder in glob.glob(os.path.join(output, f"{PREFIX_CHECKPOINT_DIR}-*")):
        shutil.rmtree(folder, ignore_errors=True)
