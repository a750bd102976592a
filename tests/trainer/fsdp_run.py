"""The FSDP runs of tests/trainer/test_fsdp.py: ``torchrun --nproc-per-node 2 tests/trainer/fsdp_run.py
OUT TEACHER TIED_STUDENT NAME`` runs ``fastkd lm distill`` (batch 2 per process) for the run NAME of
``cli_helpers.fsdp_runs``: with ``--fsdp``, or without it when the environment asks for FSDP as
``accelerate launch --use_fsdp`` does (ACCELERATE_USE_FSDP). The run is interrupted by a real SIGINT
at the end of step 2 (status 130, an FSDP checkpoint-2 saved) and then run again with the same
command, which resumes from checkpoint-2 and makes step 3 only. An unexpected status or checkpoint
exits non-zero with the reason on stderr.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from typing import Any

import pytest
import torch
from cli_helpers import fsdp_runs, interrupt_at

from fastkd.trainer.cli import main as fastkd
from fastkd.trainer.interrupt import _StopOnRequest


def _steps_of(argv: list[str]) -> tuple[int, list[int]]:
    """(exit status, the optimizer steps the run made) of ``fastkd ARGV``."""
    steps: list[int] = []
    original = _StopOnRequest.on_step_end

    def on_step_end(self: _StopOnRequest, args: Any, state: Any, control: Any, **kw: Any) -> None:
        steps.append(state.global_step)
        original(self, args, state, control, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_StopOnRequest, "on_step_end", on_step_end)
        return fastkd(argv), steps


def _interrupt_then_resume(argv: list[str], output: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at(patch, 2)
        status = fastkd(argv)
    state = os.path.join(output, "checkpoint-2", "trainer_state.json")
    if status != 130 or not os.path.isfile(state):
        saved = os.path.isfile(state)
        sys.exit(f"{output}: the interrupted run gave status {status}; checkpoint-2 saved: {saved}")
    with open(state, encoding="utf-8") as f:
        step = json.load(f)["global_step"]
    if not any(name.startswith("pytorch_model_fsdp") for name in os.listdir(os.path.dirname(state))):
        sys.exit(f"{output}: checkpoint-2 is not an FSDP checkpoint: {os.listdir(os.path.dirname(state))}")
    status, steps = _steps_of(argv)
    if status != 0 or step != 2 or steps != [3]:
        sys.exit(f"{output}: checkpoint of step {step}; the rerun gave status {status} after steps {steps}")


def main(out: str, teacher: str, tied_student: str, name: str) -> None:
    torch.set_num_threads(1)  # two processes share the cores
    flag = os.environ.get("ACCELERATE_USE_FSDP") != "true"
    _interrupt_then_resume(fsdp_runs(out, teacher, tied_student, 2, fsdp=flag)[name], os.path.join(out, name))


if __name__ == "__main__":
    main(*sys.argv[1:])
