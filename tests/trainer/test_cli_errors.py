"""Every failure of the ``fastkd`` command ends with one line on stderr (status 2) and no traceback;
path, backend and option errors come before any work, so they are the only output."""

import importlib.util

import pytest
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
    layers = [*distill, "--teacher", tiny_bert, "--student-layers", "1"]
    fails([*layers, "--hard-label-weight", "1.5"], "--hard-label-weight must be in [0, 1], got 1.5", capsys)
    fails([*layers, "--temperature", "0"], "--temperature must be > 0, got 0.0", capsys)
    fails([*layers, "--sinkhorn-weight", "-1"], "--sinkhorn-weight must be >= 0", capsys)
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
        [*distill, "--teacher", tiny_llama, "--student", tiny_llama, "--data", LM_DATA, "--fsdp"],
        "--fsdp shards the student over the processes of a launcher: torchrun --nproc-per-node N",
        capsys,
    )
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


def test_hub_names_are_probed_once_when_online(monkeypatch, tmp_path, capsys: pytest.CaptureFixture) -> None:
    """Online, an uncached hub name costs one request (not transformers' minute of retries)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def missing(self, repo_id: str, **kw) -> None:
        calls.append(repo_id)
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404 Client Error: Repository Not Found")
        raise error

    def unreachable(self, repo_id: str, **kw) -> None:
        calls.append(repo_id)
        raise ConnectionError("[Errno -2] Name or service not known")

    argv = [
        "glue",
        "finetune-teacher",
        "--task",
        "sst2",
        "--output",
        str(tmp_path),
        "--model",
        "org/no-such-model",
    ]
    monkeypatch.setattr(HfApi, "model_info", missing)
    fails(
        argv, "model 'org/no-such-model': not found (not a local folder, not on the HuggingFace hub)", capsys
    )
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    fails(argv, "the HuggingFace hub is unreachable ([Errno -2] Name or service not known)", capsys)
    assert calls == ["org/no-such-model"] * 2


def test_ctrl_c_outside_training_is_a_short_message(monkeypatch, capsys: pytest.CaptureFixture) -> None:
    from fastkd.trainer.commands import info

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "\nfastkd: interrupted\n"
