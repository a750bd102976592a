"""Helpers of the command-line tests: the argument lists every end-to-end run uses (so that one test
can check that every documented option is exercised), running ``main`` in-process, and simulating
Ctrl-C at a given step."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from conftest import GLUE_DIR, LM_DATA

from fastkd.trainer.interrupt import _StopOnRequest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = f"--data-dir {GLUE_DIR} --max-train-samples 8 --max-eval-samples 4 --epochs 1 --learning-rate 1e-3"
QUICK += " --max-length 32"


def glue_runs(tmp: str, bert: str) -> dict[str, list[str]]:
    teacher, quick = f"{tmp}/teacher", f"{QUICK} --batch-size 8"
    distill = f"glue distill --task sst2 --teacher {teacher} {quick}"
    runs = {
        "teacher": f"glue finetune-teacher --task sst2 --model {bert} --output {teacher} {quick} --seed 1"
        " --eval-steps 1 --no-resume --precision fp32",
        "kd": f"{distill} --student-layers 1 --student-from {bert} --output {tmp}/kd --loss jsd"
        ' --loss-options {"beta":0.3} --temperature 2 --scale-t2 --mix-hard-labels --sinkhorn-weight 0.1'
        " --backend torch",
        "path": f"{distill} --student {bert} --output {tmp}/path --hard-label-weight 0.5 --sinkhorn"
        " --backend auto --seed 2 --eval-steps 2 --no-resume --precision bf16",
        "demo": f"glue demo --tiny --output {tmp}/demo --max-samples 16 --epochs 1 --seed 3 --no-resume",
    }
    return {name: argv.split() for name, argv in runs.items()}


def glue_resume_runs(tmp: str, bert: str) -> dict[str, list[str]]:
    """Runs of 4 steps (batch 2) that a test interrupts at step 1 and then resumes explicitly."""
    quick = f"{QUICK} --batch-size 2"
    teacher = f"glue finetune-teacher --task sst2 --model {bert} --output {tmp}/t {quick}"
    student = f"glue distill --task sst2 --teacher {bert} --student-layers 1 --output {tmp}/s {quick}"
    runs = {
        "teacher": teacher,
        "teacher-resume": f"{teacher} --resume {tmp}/t/checkpoint-1",
        "student": student,
        "student-resume": f"{student} --resume {tmp}/s/checkpoint-1",
    }
    return {name: argv.split() for name, argv in runs.items()}


def lm_runs(tmp: str, llama: str, bare_llama: str) -> dict[str, list[str]]:
    cache = f"{tmp}/cache"
    live = f"lm distill --teacher {llama} --student {llama} --data {LM_DATA} --output {tmp}/live"
    live += " --max-steps 4 --batch-size 2 --save-steps 10 --fused-linear"
    runs = {
        "cache": f"lm cache-teacher --teacher {llama} --data {LM_DATA} --top-k 8 --output {cache}"
        " --temperature 2 --max-length 24 --batch-size 2 --shard-size 3 --max-samples 7",
        "verify": f"lm verify-cache {cache}",
        "from-cache": f"lm distill --teacher-cache {cache} --student {bare_llama} --output {tmp}/from-cache"
        " --max-steps 2 --batch-size 2 --gradient-accumulation-steps 2 --learning-rate 1e-3 --seed 3"
        " --save-steps 1 --hard-label-weight 0.3 --backend torch --no-resume",
        "taid": f"lm distill --teacher {llama} --student-layers 1 --data {LM_DATA} --loss taid"
        ' --loss-options {"t_start":0.5} --temperature 2 --scale-t2 --epochs 1 --max-length 16'
        f" --max-samples 4 --batch-size 2 --output {tmp}/taid --fused-linear --hard-label-weight 0.2",
        "live": live,
        "live-resume": f"{live} --resume {tmp}/live/checkpoint-1",
        "info": "info",
    }
    return {name: argv.split() for name, argv in runs.items()}


def fsdp_runs(
    tmp: str, teacher: str, tied_student: str, batch: int, fsdp: bool = False
) -> dict[str, list[str]]:
    """The FSDP test's two runs of 3 optimizer steps on the 4 first examples (``batch`` per process):
    the logits path (TAID, a 1-layer student cut from the teacher) and the fused-linear path (JSD with
    hard labels, a student with tied embeddings); with ``fsdp``, under tests/trainer/fsdp_run.py."""
    base = f"lm distill --teacher {teacher} --data {LM_DATA} --max-samples 4 --max-length 32 --max-steps 3"
    base += f" --batch-size {batch} --save-steps 2 --learning-rate 1e-2 --seed 0" + " --fsdp" * fsdp
    runs = {
        "logits": f"{base} --student-layers 1 --loss taid --output {tmp}/logits",
        "fused": f"{base} --student {tied_student} --fused-linear --loss jsd --temperature 1.5"
        f" --hard-label-weight 0.2 --output {tmp}/fused",
    }
    return {name: argv.split() for name, argv in runs.items()}


def interrupt_at(monkeypatch: Any, step: int) -> None:
    """Send this process a real SIGINT at the end of optimizer step ``step`` of the next runs."""
    original = _StopOnRequest.on_step_end

    def on_step_end(self: _StopOnRequest, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == step and not self.requested:
            os.kill(os.getpid(), signal.SIGINT)
        original(self, args, state, control, **kw)

    monkeypatch.setattr(_StopOnRequest, "on_step_end", on_step_end)


def summary(directory: str) -> dict:
    with open(os.path.join(directory, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def free_port() -> str:
    """A localhost TCP port that is free now (for a process group's master)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(processes: int, script: str, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N SCRIPT ARGS`` on a free localhost port, the repository on PYTHONPATH."""
    command = ["torchrun", "--nproc-per-node", str(processes), "--master-port", free_port(), script, *args]
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def fastkd(*args: str, module: str = "fastkd", **kw: Any) -> subprocess.CompletedProcess:
    """``python -m fastkd ARGS`` in a subprocess, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600, **kw
    )


def precision_runs(tmp: str, llama: str) -> dict[str, list[str]]:
    """One optimizer step of ``lm distill`` in fp32, bf16, bf16 with the fused-linear path, and with a
    bf16 teacher (under bf16 autocast on the logits path; in an fp32 run on the fused path)."""
    base = f"lm distill --teacher {llama} --student-layers 1 --data {LM_DATA} --max-samples 4"
    base += " --max-length 24 --max-steps 1 --batch-size 4 --learning-rate 1e-3"
    runs = {
        "fp32": f"{base} --output {tmp}/fp32 --precision fp32",
        "bf16": f"{base} --output {tmp}/bf16 --precision bf16",
        "bf16-fused": f"{base} --output {tmp}/bf16-fused --precision bf16 --fused-linear",
        "bf16-teacher": f"{base} --output {tmp}/bf16-teacher --precision bf16 --teacher-dtype bf16",
        "fp32-bf16-teacher-fused": f"{base} --output {tmp}/fp32-bf16-teacher-fused --precision fp32"
        " --teacher-dtype bf16 --fused-linear",
    }
    return {name: argv.split() for name, argv in runs.items()}
