"""DistillationTrainer: the loss against an independent computation, gradient accumulation, the teacher's
handling, logged components, TAID state across a resume, and bad input."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import GLUE_DIR
from transformers import BertForSequenceClassification, DataCollatorWithPadding, LlamaConfig, LlamaForCausalLM

from fastkd.trainer import DistillationArguments, DistillationTrainer
from fastkd.trainer.glue.data import get_task, load_split, tokenize
from fastkd.trainer.lm.data import LMCollator, encode_all, read_jsonl
from fastkd.trainer.models import tiny_bert_config, tiny_tokenizer


def bert(seed: int, num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_bert_config(num_labels=num_labels)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return BertForSequenceClassification(config)


def llama(seed: int, vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def sst2():
    return tokenize(load_split(get_task("sst2"), "train", GLUE_DIR, 8), tiny_tokenizer())


def args(tmp_path, **kw) -> DistillationArguments:
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    return DistillationArguments(**{**base, **kw})


def oracle_kl(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """Σ p (log p − log q) per row, in fp64, written independently of fastkd."""
    lp = torch.log_softmax(t.double() / T, -1)
    lq = torch.log_softmax(s.double() / T, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def test_classification_loss_matches_independent_formula(tmp_path, sst2) -> None:
    student, teacher = bert(0), bert(1)
    a = args(tmp_path, temperature=2.0, scale_by_temperature_squared=True, hard_label_weight=0.3)
    trainer = DistillationTrainer(model=student, args=a, teacher_model=teacher, train_dataset=sst2)
    batch = DataCollatorWithPadding(tiny_tokenizer())([sst2[i] for i in range(8)])
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=torch.tensor(16))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    s, t = student(**inputs).logits, teacher(**inputs).logits
    kd = oracle_kl(s, t, 2.0).sum() / 16 * 4.0
    ce = F.cross_entropy(s.double(), batch["labels"], reduction="sum") / 16
    torch.testing.assert_close(loss.double(), 0.7 * kd + 0.3 * ce, rtol=1e-5, atol=1e-6)


def _one_step(tmp_path, sst2, batch: int, accumulation: int) -> dict[str, torch.Tensor]:
    student, teacher = bert(0), bert(1)
    a = args(
        tmp_path,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        hard_label_weight=0.5,
        temperature=2.0,
    )
    trainer = DistillationTrainer(
        model=student,
        args=a,
        teacher_model=teacher,
        train_dataset=sst2,
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
    )
    trainer.train()
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def test_gradient_accumulation_equals_big_batch(tmp_path, sst2) -> None:
    big = _one_step(tmp_path / "a", sst2, 8, 1)
    small = _one_step(tmp_path / "b", sst2, 4, 2)
    before = bert(0).state_dict()
    moved = [k for k in big if not torch.equal(big[k], before[k])]
    assert moved, "the step changed nothing"
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=1e-4, atol=1e-6)


def test_teacher_eval_no_grad_own_dtype_and_logged_components(tmp_path, sst2) -> None:
    student, teacher = bert(0), bert(1).to(torch.bfloat16).train()
    a = args(tmp_path, per_device_train_batch_size=4, max_steps=2, logging_steps=1, hard_label_weight=0.25)
    trainer = DistillationTrainer(
        model=student,
        args=a,
        teacher_model=teacher,
        train_dataset=sst2,
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
    )
    trainer.train()
    assert not teacher.training
    assert all(
        p.dtype == torch.bfloat16 and not p.requires_grad and p.grad is None for p in teacher.parameters()
    )
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["loss"] == pytest.approx(0.75 * h["loss_kd"] + 0.25 * h["loss_ce"], rel=1e-3, abs=1e-5)


def test_causal_lm_shift_and_response_only_mask(tmp_path) -> None:
    tokenizer = tiny_tokenizer()
    examples = encode_all(read_jsonl(f"{GLUE_DIR}/../lm.jsonl", 4), tokenizer, 64)
    assert any(-100 in e["labels"] for e in examples) and all(
        len(e["labels"]) == len(e["input_ids"]) for e in examples
    )
    student, teacher = llama(0, len(tokenizer)), llama(1, len(tokenizer))
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path, temperature=1.5), teacher_model=teacher, task="causal_lm"
    )
    batch = LMCollator(0)(examples)
    n = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    labels = batch["labels"][:, 1:]
    assert int(n) == int(labels.ne(-100).sum())
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=n)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    kl = oracle_kl(student(**inputs).logits[:, :-1], teacher(**inputs).logits[:, :-1], 1.5)
    expected = kl[labels.ne(-100)].sum() / int(n)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_causal_lm_hard_label_weight(tmp_path) -> None:
    """(1-w)·KL + w·CE over the shifted response tokens of [B, T, V] logits, and a training step."""
    tokenizer = tiny_tokenizer()
    examples = encode_all(read_jsonl(f"{GLUE_DIR}/../lm.jsonl", 4), tokenizer, 64)
    student, teacher = llama(0, len(tokenizer)), llama(1, len(tokenizer))
    a = args(tmp_path, hard_label_weight=0.4, max_steps=1, per_device_train_batch_size=4)
    trainer = DistillationTrainer(
        model=student, args=a, teacher_model=teacher, task="causal_lm", train_dataset=examples
    )
    trainer.data_collator = LMCollator(0)
    batch = LMCollator(0)(examples)
    labels = batch["labels"][:, 1:]
    n = int(labels.ne(-100).sum())
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=torch.tensor(n))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    s, t = student(**inputs).logits[:, :-1], teacher(**inputs).logits[:, :-1]
    valid = labels.ne(-100)
    kl = oracle_kl(s, t, 1.0)[valid].sum() / n
    ce = F.cross_entropy(s[valid].double(), labels[valid], reduction="sum") / n
    torch.testing.assert_close(loss.double(), 0.6 * kl + 0.4 * ce, rtol=1e-5, atol=1e-6)
    trainer.args.remove_unused_columns = False
    assert math.isfinite(trainer.train().training_loss)


def test_ce_only_student_skips_the_teacher(tmp_path, sst2) -> None:
    """hard_label_weight = 1 (no Sinkhorn): the KD term has weight 0, the teacher never runs."""
    student, teacher = bert(0), bert(1)

    def refuse(*_: object) -> None:
        raise AssertionError("the teacher ran although the KD weight is 0")

    teacher.register_forward_pre_hook(refuse)
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path, hard_label_weight=1.0), teacher_model=teacher
    )
    batch = DataCollatorWithPadding(tiny_tokenizer())([sst2[i] for i in range(8)])
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=torch.tensor(8))
    s = student(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(loss, F.cross_entropy(s, batch["labels"]), rtol=1e-5, atol=1e-6)
    assert set(trainer._sums) == {"ce"}
    DistillationTrainer(model=bert(0), args=args(tmp_path, hard_label_weight=1.0))  # no teacher needed


def test_bad_input_fails_early(tmp_path) -> None:
    with pytest.raises(ValueError, match="number of labels: teacher 3, student 2"):
        DistillationTrainer(model=bert(0), args=args(tmp_path), teacher_model=bert(1, num_labels=3))
    with pytest.raises(ValueError, match="vocabulary size: teacher 300, student 189"):
        DistillationTrainer(
            model=llama(0, 189), args=args(tmp_path), teacher_model=llama(1, 300), task="causal_lm"
        )
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationTrainer(model=bert(0), args=args(tmp_path))
    with pytest.raises(ValueError, match=r"teacher not found: .*nope"):
        DistillationTrainer(model=bert(0), args=args(tmp_path, teacher_name_or_path=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="kd_backend cuda: backend 'cuda' has no kernels"):
        DistillationTrainer(model=bert(0), args=args(tmp_path, kd_backend="cuda"), teacher_model=bert(1))
    with pytest.raises(ValueError, match="kd_backend gpu: unknown backend 'gpu'"):
        DistillationTrainer(model=bert(0), args=args(tmp_path, kd_backend="gpu"), teacher_model=bert(1))
    with pytest.raises(ValueError, match="unknown loss 'kl2'"):
        DistillationTrainer(model=bert(0), args=args(tmp_path, loss_name="kl2"), teacher_model=bert(1))
    with pytest.raises(TypeError, match="forward_kl"):
        DistillationTrainer(
            model=bert(0), args=args(tmp_path, loss_options={"beta": 0.3}), teacher_model=bert(1)
        )
    with pytest.raises(ValueError, match="unknown task 'seq2seq'"):
        DistillationTrainer(model=bert(0), args=args(tmp_path), teacher_model=bert(1), task="seq2seq")
    with pytest.raises(ValueError, match="regression student"):
        DistillationTrainer(
            model=bert(0, 1), args=args(tmp_path), teacher_model=bert(1, 1), task="regression"
        )
    with pytest.raises(ValueError, match="hard_label_weight"):
        args(tmp_path, hard_label_weight=1.5)


def _taid_run(
    tmp_path, sst2, steps: int, resume: str | None = None
) -> tuple[DistillationTrainer, list[float]]:
    a = args(
        tmp_path,
        loss_name="taid",
        loss_options={"total_steps": 6, "alpha": 0.05, "beta": 0.5},
        per_device_train_batch_size=2,
        max_steps=steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=3,
        learning_rate=5e-3,
        seed=3,
        data_seed=3,
    )
    trainer = DistillationTrainer(
        model=bert(0),
        args=a,
        teacher_model=bert(1),
        train_dataset=sst2,
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, [h["taid_t"] for h in trainer.state.log_history if "taid_t" in h]


def test_taid_state_survives_resume(tmp_path, sst2) -> None:
    _, full = _taid_run(tmp_path / "full", sst2, 6)
    assert len(full) == 6 and full[-1] > full[0] and all(b >= a for a, b in itertools.pairwise(full))
    _, resumed = _taid_run(tmp_path / "resumed", sst2, 6, resume=str(tmp_path / "full" / "checkpoint-3"))
    assert resumed[-3:] == pytest.approx(full[3:], rel=1e-6)
    fresh = math.isclose(resumed[-3], full[0], rel_tol=1e-9)
    assert not fresh, "the resumed run restarted the schedule"


def test_sinkhorn_term_is_added_with_its_weight(tmp_path, sst2) -> None:
    import fastkd

    student, teacher = bert(0), bert(1)
    a = args(tmp_path, sinkhorn_weight=0.5, temperature=2.0, kd_backend="torch")
    trainer = DistillationTrainer(model=student, args=a, teacher_model=teacher, train_dataset=sst2)
    batch = DataCollatorWithPadding(tiny_tokenizer())([sst2[i] for i in range(8)])
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=torch.tensor(16))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    s, t = student(**inputs).logits, teacher(**inputs).logits
    kd = oracle_kl(s, t, 2.0).sum() / 16
    sinkhorn = fastkd.losses.sinkhorn_loss(s, t, backend="torch") * 8 / 16  # this micro-batch's share
    torch.testing.assert_close(loss.double(), kd + 0.5 * sinkhorn.double(), rtol=1e-5, atol=1e-6)
    assert set(trainer._sums) == {"kd", "sinkhorn"}
