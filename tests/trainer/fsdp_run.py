"""The FSDP runs of tests/trainer/test_fsdp.py: ``torchrun --nproc-per-node 2 tests/trainer/fsdp_run.py
OUT TEACHER TIED_STUDENT BATCH`` runs ``fastkd lm distill`` (BATCH per process) for both runs of
``cli_helpers.fsdp_runs``: the logits run in the environment ``accelerate launch --use_fsdp
--fsdp_version 2 --fsdp_state_dict_type SHARDED_STATE_DICT --fsdp_auto_wrap_policy
TRANSFORMER_BASED_WRAP`` sets (no ``--fsdp``), the fused-linear run with ``--fsdp``. Each is
interrupted by a real SIGINT at the end of step 2 (status 130, an FSDP checkpoint-2 saved) and then
run again with the same command, which resumes from checkpoint-2 and makes step 3 only. An
unexpected status or checkpoint exits non-zero with the reason on stderr.
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
from accelerate.state import AcceleratorState
from cli_helpers import fsdp_runs, interrupt_at

from fastkd.trainer.cli import main as fastkd
from fastkd.trainer.interrupt import _StopOnRequest

ACCELERATE_FSDP = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
}


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


def _interrupt_then_resume(argv: list[str], output: str, weights: str) -> None:
    """Interrupt at step 2, check checkpoint-2 (its FSDP ``weights`` entry), rerun to the end."""
    with pytest.MonkeyPatch.context() as patch:
        interrupt_at(patch, 2)
        status = fastkd(argv)
    state = os.path.join(output, "checkpoint-2", "trainer_state.json")
    if status != 130 or not os.path.isfile(state):
        saved = os.path.isfile(state)
        sys.exit(f"{output}: the interrupted run gave status {status}; checkpoint-2 saved: {saved}")
    with open(state, encoding="utf-8") as f:
        step = json.load(f)["global_step"]
    if weights not in os.listdir(os.path.dirname(state)):
        sys.exit(f"{output}: checkpoint-2 has no {weights}: {os.listdir(os.path.dirname(state))}")
    status, steps = _steps_of(argv)
    if status != 0 or step != 2 or steps != [3]:
        sys.exit(f"{output}: checkpoint of step {step}; the rerun gave status {status} after steps {steps}")


def main(out: str, teacher: str, tied_student: str, batch: str) -> None:
    torch.set_num_threads(1)  # two processes share the cores
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ACCELERATE_FSDP.items():
            patch.setenv(key, value)
        logits = fsdp_runs(out, teacher, tied_student, int(batch))["logits"]
        _interrupt_then_resume(logits, os.path.join(out, "logits"), "pytorch_model_fsdp_0")  # sharded
    # A fastkd command owns its process; these share one, so the next one starts with a fresh
    # accelerate state (its FSDP plugin from --fsdp), as HF's hyperparameter search resets it.
    AcceleratorState._reset_state()
    fused = fsdp_runs(out, teacher, tied_student, int(batch), fsdp=True)["fused"]
    _interrupt_then_resume(fused, os.path.join(out, "fused"), "pytorch_model_fsdp.bin")  # full state


if __name__ == "__main__":
    main(*sys.argv[1:])
