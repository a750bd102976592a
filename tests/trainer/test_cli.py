"""End-to-end runs of the ``fastkd`` command in subprocesses on the shipped fixtures, and its errors."""

import json
import os
import subprocess
import sys

import pytest
from conftest import GLUE_DIR, LM_DATA, save_tiny_bert

from fastkd.trainer.cli import main

QUICK = ["--data-dir", GLUE_DIR, "--max-train-samples", "8", "--max-eval-samples", "4", "--epochs", "1"]
QUICK += ["--batch-size", "8", "--learning-rate", "1e-3", "--max-length", "32"]


def fastkd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "fastkd.trainer.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def ok(*args: str) -> subprocess.CompletedProcess:
    result = fastkd(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary(directory: str) -> dict:
    with open(os.path.join(directory, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "metrics", "student"),
    [
        ("sst2", {"accuracy"}, "layers"),
        ("mrpc", {"accuracy", "f1"}, "path"),
        ("stsb", {"pearson", "spearman"}, "layers"),
    ],
)
def test_glue_finetune_then_distill(tmp_path, tiny_bert, task: str, metrics: set, student: str) -> None:
    teacher = str(tmp_path / "teacher")
    ok("glue", "finetune-teacher", "--task", task, "--model", tiny_bert, "--output", teacher, *QUICK)
    assert metrics <= set(summary(teacher)["teacher"]["metrics"])
    how = ["--student-layers", "1"] if student == "layers" else ["--student", tiny_bert]
    if task == "stsb":
        how = ["--student", save_tiny_bert(str(tmp_path / "s"), num_labels=1)]
    out = str(tmp_path / "student")
    extra = ["--eval-steps", "1", "--scale-t2"] if task == "mrpc" else []
    if task == "mrpc":
        extra.append("--sinkhorn")
    result = ok(
        "glue", "distill", "--task", task, "--teacher", teacher, *how, "--output", out, *QUICK, *extra
    )
    row = summary(out)["student"]
    assert metrics <= set(row["metrics"]) and row["loss"] == ("mse" if task == "stsb" else "forward_kl")
    assert row["wall_time_s"] > 0 and row["train_tokens_per_s"] > 0
    assert "| student |" in result.stdout and os.path.isfile(os.path.join(out, "summary.md"))
    assert os.path.isfile(os.path.join(out, "model.safetensors"))


@pytest.mark.slow
def test_lm_cache_then_distill(tmp_path, tiny_llama) -> None:
    cache = str(tmp_path / "cache")
    ok("lm", "cache-teacher", "--teacher", tiny_llama, "--data", LM_DATA, "--top-k", "8", "--output", cache)
    assert os.path.isfile(os.path.join(cache, "shard-00000.safetensors"))
    out = str(tmp_path / "student")
    result = ok(
        "lm",
        "distill",
        "--teacher-cache",
        cache,
        "--student",
        tiny_llama,
        "--output",
        out,
        "--max-steps",
        "2",
    )
    assert summary(out)["student"]["loss"] == "sparse_kl" and "| student |" in result.stdout


def test_bad_input_exits_with_a_message(tmp_path, tiny_bert, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (
            ["glue", "finetune-teacher", "--task", "squad", "--model", tiny_bert, "--output", str(tmp_path)],
            "unknown GLUE task",
        ),
        (
            [
                "glue",
                "distill",
                "--task",
                "rte",
                "--teacher",
                str(tmp_path / "none"),
                "--student-layers",
                "1",
                "--output",
                str(tmp_path),
            ],
            "cannot load teacher",
        ),
        (
            [
                "glue",
                "distill",
                "--task",
                "mnli",
                "--teacher",
                tiny_bert,
                "--student-layers",
                "1",
                "--output",
                str(tmp_path),
            ],
            "has 2 labels, task mnli has 3",
        ),
        (
            [
                "glue",
                "distill",
                "--task",
                "rte",
                "--teacher",
                tiny_bert,
                "--output",
                str(tmp_path),
                "--data-dir",
                GLUE_DIR,
            ],
            "exactly one of --student",
        ),
        (
            [
                "glue",
                "distill",
                "--task",
                "rte",
                "--teacher",
                tiny_bert,
                "--student-layers",
                "1",
                "--loss",
                "nope",
                "--output",
                str(tmp_path),
                "--data-dir",
                GLUE_DIR,
            ],
            "unknown loss 'nope'",
        ),
        (["lm", "distill", "--student", tiny_bert, "--output", str(tmp_path)], "give --teacher PATH"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_subprocess_error_has_no_traceback(tmp_path) -> None:
    result = fastkd(
        "glue",
        "distill",
        "--task",
        "sst2",
        "--teacher",
        str(tmp_path),
        "--student-layers",
        "1",
        "--output",
        str(tmp_path),
    )
    assert result.returncode == 2 and "fastkd: error: cannot load teacher" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_runs_three_jobs_and_prints_the_table(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["glue", "demo", "--tiny", "--output", str(tmp_path), "--max-samples", "16", "--epochs", "1"])
        == 0
    )
    out = capsys.readouterr().out
    for run in ("| teacher |", "| student without KD (CE only) |", "| distilled student |"):
        assert run in out
    runs = summary(str(tmp_path))["runs"]
    assert [r["loss"] for r in runs] == ["cross_entropy", "cross_entropy", "forward_kl"]
    assert all("accuracy" in r["metrics"] for r in runs)
