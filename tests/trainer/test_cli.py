"""End-to-end runs of the ``fastkd`` command on the shipped fixtures: every documented option at least
once, interruption and resume, the output folder's contents, ``python -m fastkd``, lazy parsing."""

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import (
    fastkd,
    fsdp_runs,
    glue_resume_runs,
    glue_runs,
    interrupt_at,
    lm_runs,
    precision_runs,
    summary,
)
from conftest import LM_DATA, save_tiny_llama
from safetensors.torch import load_file

from fastkd.trainer.cli import build_parser, main


def run(argv: list[str], capsys: pytest.CaptureFixture, status: int = 0) -> str:
    assert main(argv) == status, capsys.readouterr().err[-3000:]
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return out + err


def _leaves(parser: argparse.ArgumentParser, prefix: tuple = ()) -> dict[tuple, set[str]]:
    """Every sub-command's option strings (``--help`` left out); each must have a help text."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        for action in parser._actions:
            assert action.help, f"fastkd {' '.join(prefix)} {action.option_strings or action.dest}: no help"
        options = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
        return {prefix: options}
    return {k: v for name, p in subs[0].choices.items() for k, v in _leaves(p, (*prefix, name)).items()}


def test_every_documented_option_is_exercised() -> None:
    runs = [*glue_runs("t", "b").values(), *glue_resume_runs("t", "b").values()]
    runs += [*lm_runs("t", "l", "b").values(), *fsdp_runs("t", "l", "b", 2, fsdp=True).values()]
    runs += precision_runs("t", "l").values()
    leaves = _leaves(build_parser())
    # MPDistil (glue/superglue mpdistil, glue distill --pkd-*) is run end to end by test_mpdistil.py.
    leaves = {c: o for c, o in leaves.items() if c[-1] != "mpdistil"}
    leaves[("glue", "distill")] -= {"--pkd-weight", "--pkd-layers"}
    for command, options in leaves.items():
        used = {a for argv in runs if tuple(argv[: len(command)]) == command for a in argv}
        assert options <= used, f"fastkd {' '.join(command)}: never run with {sorted(options - used)}"
    assert ("lm", "verify-cache") in leaves and ("info",) in leaves


def _no_optimizer_states(directory: str) -> None:
    for root, dirs, files in os.walk(directory):
        assert not [d for d in dirs if d.startswith("checkpoint-")], root
        assert "optimizer.pt" not in files, root


@pytest.mark.slow
def test_glue_runs(tmp_path, tiny_bert, capsys: pytest.CaptureFixture) -> None:
    runs = glue_runs(str(tmp_path), tiny_bert)
    run(runs["teacher"], capsys)
    assert {"accuracy"} <= set(summary(str(tmp_path / "teacher"))["teacher"]["metrics"])
    out = run(runs["kd"], capsys)
    row = summary(str(tmp_path / "kd"))["student"]
    assert row["loss"] == "jsd" and "| student |" in out and row["train_tokens_per_s"] > 0
    run(runs["path"], capsys)
    assert os.path.isfile(tmp_path / "path" / "model.safetensors")
    assert summary(str(tmp_path / "path"))["precision"] == "bf16"
    out = run(runs["demo"], capsys)
    for line in ("| teacher |", "| student without KD (CE only) |", "| distilled student |"):
        assert line in out
    assert "Loading weights" not in out and "'loss':" not in out  # the table is not buried
    assert [r["loss"] for r in summary(str(tmp_path / "demo"))["runs"]] == ["cross_entropy"] * 2 + [
        "forward_kl"
    ]
    torch.manual_seed(1234)  # another global RNG state: --seed alone must fix the tiny base and the runs
    run([*runs["demo"][:4], str(tmp_path / "demo-again"), *runs["demo"][5:]], capsys)
    again = summary(str(tmp_path / "demo-again"))["runs"]
    for first, second in zip(summary(str(tmp_path / "demo"))["runs"], again, strict=True):
        assert (second["metrics"], second["train_loss"]) == (first["metrics"], first["train_loss"])
    for sub in ("teacher", "kd", "path", "demo"):
        _no_optimizer_states(str(tmp_path / sub))


@pytest.mark.slow
def test_lm_runs(tmp_path, tiny_llama, capsys: pytest.CaptureFixture) -> None:
    bare = save_tiny_llama(str(tmp_path / "bare"), layers=1, seed=1)
    for name in os.listdir(bare):
        if name.startswith(("tokenizer", "special_tokens", "vocab")):
            os.remove(os.path.join(bare, name))  # --teacher-cache needs no student tokenizer
    runs = lm_runs(str(tmp_path), tiny_llama, bare)
    run(runs["cache"], capsys)
    assert len(summary_of_cache := load_meta(tmp_path / "cache")["shards"]) == 3, summary_of_cache
    assert "ok (7 examples, 3 shards, top_k 8)" in run(runs["verify"], capsys)
    run(runs["from-cache"], capsys)
    assert os.path.isfile(tmp_path / "from-cache" / "tokenizer.json")  # the cache's tokenizer
    run(runs["taid"], capsys)
    assert summary(str(tmp_path / "taid"))["student"]["loss"] == "taid"
    out = run(runs["info"], capsys)
    assert "torch_intra_op_threads" in out and "cpu" in out and "transformers" in out
    for sub in ("from-cache", "taid"):
        _no_optimizer_states(str(tmp_path / sub))


def load_meta(directory) -> dict:
    from fastkd.trainer.lm.cache import read_cache_meta

    return read_cache_meta(str(directory))


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path, tiny_bert, tiny_llama, monkeypatch, capsys) -> None:
    """A SIGINT at step 1 saves checkpoint-1 and exits 130; --resume (or a rerun) continues to the
    end; the resumed student equals the uninterrupted one."""
    full = lm_runs(str(tmp_path / "full"), tiny_llama, tiny_llama)["live"]
    run(full, capsys)
    runs = {**lm_runs(str(tmp_path), tiny_llama, tiny_llama), **glue_resume_runs(str(tmp_path), tiny_bert)}
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        for name, folder in (("live", "live"), ("teacher", "t"), ("student", "s")):
            err = run(runs[name], capsys, status=130)
            checkpoint = tmp_path / folder / "checkpoint-1"
            assert f"checkpoint saved in {checkpoint}" in err and "to resume" in err, err
            assert os.path.isfile(checkpoint / "trainer_state.json")
    for name in ("live-resume", "teacher-resume", "student-resume"):
        run(runs[name], capsys)
    resumed = load_file(tmp_path / "live" / "model.safetensors")
    for key, value in load_file(tmp_path / "full" / "live" / "model.safetensors").items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)
    _no_optimizer_states(str(tmp_path / "live"))


@pytest.mark.slow
def test_sigint_subprocess_then_rerun_resumes(tmp_path, tiny_llama, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    argv = ["lm", "distill", "--teacher", tiny_llama, "--student", tiny_llama, "--data", LM_DATA]
    argv += ["--output", str(out), "--max-steps", "60", "--batch-size", "2", "--save-steps", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fastkd", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    # any checkpoint: under load the poll can miss checkpoint-1 before save_total_limit removes it
    while not any(out.glob("checkpoint-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    assert "checkpoint saved in" in err and "to resume" in err and "Traceback" not in err
    assert f"resuming from {out}/checkpoint-" in run(argv, capsys)  # the rerun, in-process
    _no_optimizer_states(str(out))


def test_python_m_fastkd_is_the_command_and_parses_without_torch() -> None:
    module, script = fastkd("--help"), fastkd("--help", module="fastkd.trainer.cli")
    assert module.returncode == 0 and module.stdout == script.stdout and "glue" in module.stdout
    code = (
        "import sys; from fastkd.trainer.cli import build_parser; "
        "build_parser().parse_args(['lm', 'distill', '--output', 'x']); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.slow
def test_interrupted_demo_resumes_on_rerun(tmp_path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    argv = ["glue", "demo", "--tiny", "--output", str(tmp_path), "--max-samples", "32", "--epochs", "1"]
    with monkeypatch.context() as m:
        interrupt_at(m, 1)
        err = run(argv, capsys, status=130)
    assert f"checkpoint saved in {tmp_path}/teacher/checkpoint-1" in err and "--resume" not in err
    out = run(argv, capsys)
    assert f"resuming from {tmp_path}/teacher/checkpoint-1" in out and "| distilled student |" in out
    _no_optimizer_states(str(tmp_path))
