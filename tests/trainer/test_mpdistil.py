"""MPDistil phases on tiny BERTs: the meta-teacher's frozen encoder, the curriculum quirks, end-to-end
``fastkd glue|superglue mpdistil`` runs on the shipped fixtures (SuperGLUE, GLUE, a 2-task curriculum),
a resume after an interruption, and the bad inputs caught before any training."""

import copy
import json
import os
import random
import re

import pytest
import torch
from conftest import GLUE_DIR, save_tiny_bert

from fastkd.trainer.cli import main
from fastkd.trainer.glue.data import get_task, load_split, tokenize
from fastkd.trainer.models import DATA_DIR, tiny_tokenizer
from fastkd.trainer.mpdistil.curriculum import CurriculumOptions, Policy, policy_optimizer, run_episode
from fastkd.trainer.mpdistil.model import TaskModel, load_classifier
from fastkd.trainer.mpdistil.phases import adamw, make_loader, meta_epoch, meta_teacher

SUPERGLUE_DIR = os.path.join(DATA_DIR, "demo", "superglue")
QUICK = ["--epochs", "1", "--teacher-epochs", "1", "--episodes", "2", "--max-length", "32"]
QUICK += ["--batch-size", "4", "--max-train-samples", "16", "--max-eval-samples", "8"]
QUICK += ["--quiz-fraction", "0.25", "--learning-rate", "1e-3", "--teacher-lr", "1e-3"]
ROWS = ["teacher", "student_no_kd", "student_kd", "meta_teacher", "student_pkd", "mpdistil"]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    root = tmp_path_factory.mktemp("mpdistil_teachers")
    return {n: save_tiny_bert(str(root / f"t{n}"), num_labels=n, layers=3) for n in (2, 3)}


def _summary(out: str) -> dict:
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def _cb_batches(n: int = 8, task: str = "cb") -> list[dict]:
    ds = tokenize(load_split(get_task(task), "train", SUPERGLUE_DIR, n), tiny_tokenizer(), 32)
    return list(make_loader(ds, tiny_tokenizer(), 4, True, 0))


def _both(teacher: TaskModel, student: TaskModel) -> dict[str, torch.Tensor]:
    return {**teacher.state_dict(), **{"s." + k: v for k, v in student.state_dict().items()}}


def test_meta_teacher_trains_its_head_only(teachers: dict[int, str]) -> None:
    torch.manual_seed(0)
    teacher = TaskModel(load_classifier(teachers[3], None), "cb")
    student = TaskModel(load_classifier(teachers[3], None), "cb")
    meta = meta_teacher(teacher)
    before = copy.deepcopy(meta.state_dict())
    frozen = {k: v.clone() for k, v in _both(teacher, student).items()}
    meta_epoch(meta, teacher, student, _cb_batches(), adamw(meta, 1e-2), "competitive")
    after = meta.state_dict()
    encoder_keys = [k for k in after if k.startswith("model.bert.")]
    assert encoder_keys and all(torch.equal(before[k], after[k]) for k in encoder_keys)
    assert not torch.equal(before["model.classifier.weight"], after["model.classifier.weight"])
    now = _both(teacher, student)
    assert all(torch.equal(frozen[k], now[k]) for k in frozen)


def _episode(teachers: dict[int, str], opts: CurriculumOptions) -> tuple[TaskModel, int]:
    torch.manual_seed(1)
    student = TaskModel(load_classifier(teachers[3], None), "cb", {"boolq": 2})
    meta = meta_teacher(TaskModel(load_classifier(teachers[3], None), "cb", {"boolq": 2}))
    meta.model.classifier.weight.data.normal_()  # T′ must differ from the student for nonzero rewards
    policy = Policy(32, 2)
    s_opt = torch.optim.SGD(student.parameters(), lr=1e-2)  # Adam's first step is ~sign(g)
    steps = []
    original = s_opt.step

    def counted_step(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    s_opt.step = counted_step
    optimizers = (s_opt, policy_optimizer(policy, opts))
    quiz = {"cb": _cb_batches(), "boolq": _cb_batches(task="boolq")}
    run_episode(student, meta, policy, quiz, optimizers, opts, random.Random(0))
    return student, len(steps)


def test_curriculum_quirks_and_their_fixes(teachers: dict[int, str]) -> None:
    quirky, quirk_steps = _episode(teachers, CurriculumOptions(episodes=1, reward="real"))
    detached, _ = _episode(teachers, CurriculumOptions(episodes=1, reward="real", detach_state=True))
    fixed = CurriculumOptions(episodes=1, reward="real", detach_state=True, step_every_batch=True)
    per_batch, fixed_steps = _episode(teachers, fixed)
    assert quirk_steps == 1 and fixed_steps == 2  # two quiz batches: one accumulated step vs one per batch
    q, d = quirky.state_dict(), detached.state_dict()
    pooler = "model.bert.pooler.dense.weight"
    assert not torch.equal(q[pooler], d[pooler])  # the policy gradient reached the pooler
    assert all(torch.equal(q[k], d[k]) for k in q if k != pooler)
    assert not torch.equal(per_batch.state_dict()[pooler], d[pooler])


def test_superglue_end_to_end(tmp_path, teachers: dict[int, str], capsys) -> None:
    out = str(tmp_path / "cb")
    args = ["superglue", "mpdistil", "--task", "cb", "--teacher", teachers[3], "--output", out]
    assert main([*args, "--student-layers", "2", "--data-dir", SUPERGLUE_DIR, *QUICK]) == 0
    summary = _summary(out)
    assert [r["run"] for r in summary["rows"]] == ROWS
    for row in summary["rows"]:
        assert {"accuracy", "macro_f1"} <= set(row["metrics"]) and row["wall_time_s"] > 0
    assert len(summary["phases"]["curriculum"]["episodes"]) == 2
    assert "| mpdistil |" in capsys.readouterr().out and os.path.isfile(os.path.join(out, "summary.md"))
    assert os.path.isfile(os.path.join(out, "curriculum", "model.safetensors"))


def test_glue_end_to_end_finetuned_teacher_competitive_real(tmp_path, teachers: dict[int, str]) -> None:
    out = str(tmp_path / "rte")
    args = ["glue", "mpdistil", "--task", "rte", "--teacher", teachers[2], "--teacher-finetuned"]
    args += ["--output", out, "--student-layers", "1", "--data-dir", GLUE_DIR]
    args += ["--meta-loss", "competitive", "--reward", "real", "--fix-quirks"]
    assert main([*args, *QUICK]) == 0
    summary = _summary(out)
    assert summary["phases"]["teacher"]["fine_tuned"] is False
    assert summary["config"]["detach_state"] and summary["config"]["relative_discount"]
    assert [r["run"] for r in summary["rows"]] == ROWS


def test_two_task_curriculum(tmp_path, teachers: dict[int, str]) -> None:
    out = str(tmp_path / "pool")
    args = ["superglue", "mpdistil", "--task", "cb", "--teacher", teachers[3], "--output", out]
    args += ["--student-layers", "2", "--data-dir", SUPERGLUE_DIR, "--curriculum-tasks", "cb,boolq"]
    assert main([*args, *QUICK, "--batch-size", "2", "--episodes", "3"]) == 0
    episodes = _summary(out)["phases"]["curriculum"]["episodes"]
    assert {t for e in episodes for t in e["trajectory"]} == {"cb", "boolq"}
    heads = torch.load(os.path.join(out, "curriculum", "mpdistil_heads.pt"), weights_only=True)
    assert heads["boolq.1.weight"].shape == (2, 32)


def test_resume_after_interruption(tmp_path, teachers: dict[int, str], capsys) -> None:
    out = str(tmp_path / "resume")
    args = ["superglue", "mpdistil", "--task", "cb", "--teacher", teachers[3], "--output", out]
    args += ["--student-layers", "2", "--data-dir", SUPERGLUE_DIR, *QUICK]
    assert main([*args, "--stop-after", "student_kd", "--episodes", "5"]) == 0  # episodes: a later phase
    first = _summary(out)
    assert [r["run"] for r in first["rows"]] == ROWS[:3] and not os.path.exists(os.path.join(out, "distill"))
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().out
    for phase in ("teacher", "student_no_kd", "student_kd"):
        assert f"phase {phase}: resumed" in log
    assert "phase distill: running" in log and "phase curriculum: running" in log
    final = _summary(out)
    assert [r["run"] for r in final["rows"]] == ROWS
    assert final["rows"][0]["metrics"] == first["rows"][0]["metrics"]
    assert main([*args, "--alpha", "0.3"]) == 2
    assert (
        "finished phases (student_kd, distill, curriculum) run with other settings (alpha)"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--curriculum-tasks", "cb,nosuchtask"], "--curriculum-tasks: unknown .* task 'nosuchtask'"),
        (["--teacher-finetuned", "--teacher", "T2"], "has 2 labels, task cb has 3"),
        (["--quiz-fraction", "0"], r"quiz fraction must be in \(0, 1\), got 0.0"),
        (["--quiz-fraction", "1.5"], r"quiz fraction must be in \(0, 1\), got 1.5"),
        (["--episodes", "0"], "episodes must be >= 1, got 0"),
        (["--curriculum-tasks", "record"], "not supported"),
        (["--pkd-layers", "1,2"], "pkd layers must be 1 teacher layers"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, teachers: dict[int, str], capsys, extra, message) -> None:
    extra = [teachers[2] if x == "T2" else x for x in extra]
    out = tmp_path / "bad"
    args = ["superglue", "mpdistil", "--task", "cb", "--teacher", teachers[3], "--output", str(out)]
    assert main([*args, "--student-layers", "2", "--data-dir", SUPERGLUE_DIR, *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_pkd_trainer_adds_the_term(tmp_path, teachers: dict[int, str]) -> None:
    from fastkd.trainer.args import DistillationArguments
    from fastkd.trainer.mpdistil.losses import PKDTerm, prob_mse
    from fastkd.trainer.mpdistil.pkd_trainer import PKDDistillationTrainer

    teacher = load_classifier(teachers[3], None)
    student = load_classifier(save_tiny_bert(str(tmp_path / "s"), num_labels=3, layers=2, seed=5), None)
    args = DistillationArguments(
        output_dir=str(tmp_path / "o"), loss_name="prob_mse", temperature=5.0, use_cpu=True, report_to=[]
    )
    trainer = PKDDistillationTrainer(
        model=student, args=args, teacher_model=teacher, pkd_weight=100.0, pkd_layers=[2]
    )
    batch = _cb_batches()[0]
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s_out = student(**inputs, output_hidden_states=True)
        t_out = teacher(**inputs, output_hidden_states=True)
    expected = prob_mse(s_out.logits, t_out.logits, 5.0) + 100 * PKDTerm([2])(
        s_out.hidden_states, t_out.hidden_states
    )
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match=r"pkd layers must be 1 teacher layers in 1\.\.3"):
        PKDDistillationTrainer(
            model=student, args=args, teacher_model=teacher, pkd_weight=1.0, pkd_layers=[4]
        )


def test_glue_distill_with_prob_mse_and_pkd(tmp_path, teachers: dict[int, str], capsys) -> None:
    out = str(tmp_path / "kd")
    args = [
        "glue",
        "distill",
        "--task",
        "rte",
        "--teacher",
        teachers[2],
        "--student-layers",
        "2",
        "--output",
        out,
    ]
    args += ["--data-dir", GLUE_DIR, "--max-train-samples", "8", "--max-eval-samples", "4", "--epochs", "1"]
    assert main([*args, "--loss", "prob_mse", "--pkd-weight", "100", "--pkd-layers", "3"]) == 0
    assert _summary(out)["student"]["loss"] == "prob_mse"
    assert main([*args, "--loss", "pkd"]) == 2
    assert "add it with --pkd-weight" in capsys.readouterr().err


def test_every_setting_belongs_to_a_phase() -> None:
    from dataclasses import fields

    from fastkd.trainer.mpdistil.config import PHASE_SETTINGS, MPDistilConfig, first_affected_phase

    owned = [name for names in PHASE_SETTINGS.values() for name in names]
    assert sorted(owned) == sorted(
        f.name for f in fields(MPDistilConfig) if f.name not in ("output", "stop_after")
    )
    assert first_affected_phase({"episodes", "beta"}) == "distill" and first_affected_phase(set()) is None
