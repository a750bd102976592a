"""Every failure of the ``fastkd`` command ends with one line on stderr (status 2) and no traceback;
path, backend and option errors come before any work, so they are the only output."""

import importlib.util

import pytest
from cli_helpers import fastkd
from conftest import GLUE_DIR, LM_DATA

from fastkd.trainer import cli
from fastkd.trainer.cli import main


def fails(argv: list[str], message: str, capsys: pytest.CaptureFixture, alone: bool = True) -> None:
    """``argv`` exits with status 2 and the one line ``fastkd: error: ...message...``; ``alone``: and
    nothing else (the check came before any model was loaded)."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert message in last and last.startswith("fastkd: error: ") and "Traceback" not in err, err
    assert not alone or err.count("\n") == 1, err


def _latin1(tmp_path) -> tuple[str, str]:
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\nok\t1\n")
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    return str(folder), str(jsonl)


def test_glue_errors(tmp_path, tiny_bert, capsys: pytest.CaptureFixture) -> None:
    out, quick = str(tmp_path / "out"), ["--data-dir", GLUE_DIR]
    teacher = ["glue", "finetune-teacher", "--task", "sst2", "--output", out, *quick]
    fails([*teacher, "--model", str(tmp_path / "nope")], "--model: model not found: ", capsys)
    fails([*teacher, "--model", "./models/bert"], "model not found: './models/bert' (no such folder)", capsys)
    fails(
        [*teacher, "--model", "fastkd-tests/no-such-model"],
        "not a local folder nor in the HuggingFace cache, and HF_HUB_OFFLINE is set",
        capsys,
    )
    fails([*teacher, "--model", str(tmp_path)], "has no config.json", capsys)
    (tmp_path / "file").write_text("x")
    argv = ["glue", "finetune-teacher", "--task", "sst2", "--model", tiny_bert, *quick]
    fails([*argv, "--output", str(tmp_path / "file")], "is a file; expected a directory", capsys)
    fails([*argv, "--output", out, "--task", "squad"], "unknown GLUE task", capsys)
    folder, _ = _latin1(tmp_path)
    argv = ["glue", "finetune-teacher", "--task", "sst2", "--model", tiny_bert, "--output", out]
    fails([*argv, "--data-dir", folder], f"{folder}/train.tsv: not UTF-8 text", capsys)
    distill = ["glue", "distill", "--task", "rte", "--output", out, *quick]
    fails(
        [*distill, "--teacher", str(tmp_path / "none"), "--student-layers", "1"], "teacher not found", capsys
    )
    fails([*distill, "--teacher", tiny_bert], "exactly one of --student", capsys)
    fails(
        [*distill, "--teacher", tiny_bert, "--student-layers", "1", "--loss", "nope"], "unknown loss", capsys
    )
    fails(
        [
            "glue",
            "distill",
            "--task",
            "mnli",
            "--output",
            out,
            *quick,
            "--teacher",
            tiny_bert,
            "--student-layers",
            "1",
        ],
        "has 2 labels, task mnli has 3",
        capsys,
        alone=False,
    )
    for backend, message in (
        ("cuda", "--backend cuda: backend 'cuda' has no kernels"),
        ("gpu", "unknown backend"),
    ):
        fails(
            [*distill, "--teacher", tiny_bert, "--student-layers", "1", "--backend", backend], message, capsys
        )


def test_lm_errors(tmp_path, tiny_llama, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "out")
    _, jsonl = _latin1(tmp_path)
    distill = ["lm", "distill", "--output", out]
    fails([*distill, "--student", tiny_llama, "--data", LM_DATA], "give --teacher PATH", capsys)
    fails(
        [*distill, "--teacher", tiny_llama, "--student", tiny_llama, "--data", jsonl],
        f"{jsonl}: not UTF-8",
        capsys,
    )
    fails(
        [*distill, "--teacher", tiny_llama, "--student", tiny_llama, "--data", "no.jsonl"],
        "--data: file not found",
        capsys,
    )
    fails(
        [*distill, "--teacher", "~/nope", "--student", tiny_llama, "--data", LM_DATA],
        "--teacher: teacher not found",
        capsys,
    )
    fails(
        [*distill, "--teacher-cache", str(tmp_path / "c"), "--student", tiny_llama],
        "--teacher-cache: directory not found",
        capsys,
    )
    fails(
        [*distill, "--teacher-cache", str(tmp_path), "--student", tiny_llama],
        "is not a teacher cache",
        capsys,
    )
    fails(
        [*distill, "--teacher", tiny_llama, "--student-layers", "1", "--data", LM_DATA, "--backend", "cuda"],
        "--backend cuda",
        capsys,
    )
    fails(
        [*distill, "--teacher", tiny_llama, "--student-layers", "1", "--data", LM_DATA, "--resume", out],
        "not a checkpoint folder",
        capsys,
    )
    cache = ["lm", "cache-teacher", "--teacher", tiny_llama, "--top-k", "4", "--output", out]
    fails([*cache, "--data", jsonl], "not UTF-8", capsys)
    fails(["lm", "verify-cache", str(tmp_path)], "is not a teacher cache (no cache.json)", capsys)


def test_missing_trainer_extra_names_it(monkeypatch, tmp_path, capsys: pytest.CaptureFixture) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a)
    )
    argv = ["glue", "demo", "--output", str(tmp_path)]
    fails(argv, "needs the trainer extra (missing: datasets): pip install 'fastkd[trainer]'", capsys)
    assert cli.missing_extra(None) is None


@pytest.mark.slow
def test_subprocess_error_is_one_line(tmp_path) -> None:
    result = fastkd(
        "glue",
        "distill",
        "--task",
        "sst2",
        "--teacher",
        str(tmp_path / "x"),
        "--student-layers",
        "1",
        "--output",
        str(tmp_path),
    )
    assert result.returncode == 2 and result.stderr.startswith("fastkd: error: --teacher: teacher not found")
    assert result.stderr.count("\n") == 1
