"""``fused_linear=True``: one training step equals the unfused step (loss and updated parameters) on tiny
Llama, Gemma-2 (final-logit softcap) and a tied-embedding model built from configs; TAID's schedule over
several steps, the teacher-free CE (w = 1), T²-scaling and a top-k teacher with w > 0; bad combinations."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    default_data_collator,
)

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.cli import build_parser
from fastkd.trainer.trainer import DistillationTrainer

VOCAB = 67
SIZES = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2
)


def _model(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "gemma2":
        config = Gemma2Config(vocab_size=VOCAB, head_dim=8, final_logit_softcapping=2.0, **SIZES)
        return Gemma2ForCausalLM(config)
    config = LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=kind == "tied", **SIZES)
    return LlamaForCausalLM(config)


def _args(tmp_path, **kw) -> DistillationArguments:
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    return DistillationArguments(**{**base, **kw})


def _batch(rows: int = 2, seed: int = 0) -> dict:
    """``rows`` sequences of 12 random tokens, the first 4 labelled -100 (a prompt)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (rows, 12), generator=g)
    labels = input_ids.clone()
    labels[:, :4] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def _step(tmp_path, student, teacher, batch, **kw) -> tuple[torch.Tensor, dict]:
    """Loss and the parameters after one SGD step (lr 0.5) of ``compute_loss``'s gradient."""
    trainer = DistillationTrainer(
        model=student, args=_args(tmp_path, **kw), teacher_model=teacher, task="causal_lm"
    )
    labels = batch["labels"][:, 1:]
    n = labels.ne(-100).sum()
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=n)
    loss.backward()
    with torch.no_grad():
        for p in student.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    return loss.detach(), {k: v.detach().clone() for k, v in student.state_dict().items()}


@pytest.mark.parametrize("kind", ["llama", "gemma2", "tied"])
@pytest.mark.parametrize("loss_name,options", [("forward_kl", {}), ("jsd", {"loss_options": {"beta": 0.3}})])
def test_one_fused_step_equals_the_unfused_step(tmp_path, kind, loss_name, options) -> None:
    kw = dict(loss_name=loss_name, temperature=1.5, hard_label_weight=0.2, kd_backend="cpu", **options)
    _assert_fused_step_equal(tmp_path, kind, _model(kind, 1), _batch(), **kw)


def _assert_fused_step_equal(tmp_path, kind: str, teacher, batch: dict, **kw) -> None:
    """One step with ``fused_linear=True`` gives the unfused step's loss and updated parameters."""
    student = _model(kind, 0)
    loss, params = _step(tmp_path, copy.deepcopy(student), teacher, batch, **kw)
    fused_loss, fused_params = _step(
        tmp_path, copy.deepcopy(student), teacher, batch, fused_linear=True, **kw
    )
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-6)
    initial = student.state_dict()
    assert any(not torch.equal(params[k], initial[k]) for k in params)
    for key in params:
        torch.testing.assert_close(fused_params[key], params[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_pure_cross_entropy_needs_no_teacher(tmp_path, kind) -> None:
    _assert_fused_step_equal(tmp_path, kind, None, _batch(), hard_label_weight=1.0, kd_backend="cpu")


def test_temperature_squared_with_hard_labels(tmp_path) -> None:
    kw = dict(temperature=2.0, scale_by_temperature_squared=True, hard_label_weight=0.3, kd_backend="cpu")
    _assert_fused_step_equal(tmp_path, "gemma2", _model("gemma2", 1), _batch(), **kw)


def test_topk_teacher_with_hard_labels(tmp_path) -> None:
    batch = _batch()
    with torch.no_grad():
        logits = _model("llama", 1)(input_ids=batch["input_ids"]).logits
    values, indices = logits.topk(5, dim=-1)
    batch["teacher_topk_indices"] = indices
    batch["teacher_topk_logprobs"] = values - logits.logsumexp(-1, keepdim=True)
    kw = dict(loss_name="sparse_kl", hard_label_weight=0.25, kd_backend="torch")
    _assert_fused_step_equal(tmp_path, "llama", None, batch, **kw)


def _taid_train(
    tmp_path, fused: bool, backend: str, weight: float, resume: str | None = None, **kw
) -> tuple[DistillationTrainer, dict]:
    """Three SGD steps of TAID (a schedule that moves: alpha 0.2) on tiny Llama; the trainer and the
    student's parameters after them."""
    examples = [{k: v[0] for k, v in _batch(1, seed).items()} for seed in range(6)]
    args = _args(
        tmp_path,
        loss_name="taid",
        loss_options={"total_steps": 3, "alpha": 0.2, "beta": 0.5},
        temperature=1.5,
        hard_label_weight=weight,
        kd_backend=backend,
        fused_linear=fused,
        per_device_train_batch_size=2,
        max_steps=3,
        logging_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        seed=0,
        **kw,
    )
    trainer = DistillationTrainer(
        model=_model("llama", 0),
        args=args,
        teacher_model=_model("llama", 1),
        task="causal_lm",
        train_dataset=Dataset.from_list(examples),
        data_collator=default_data_collator,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


TRITON_ON_CPU = pytest.mark.skipif(
    torch.cuda.is_available(), reason="these trainer tests run on CPU, where triton is the interpreter"
)


@pytest.mark.parametrize("backend,weight", [("torch", 0.0), pytest.param("triton", 0.3, marks=TRITON_ON_CPU)])
def test_taid_schedule_is_the_unfused_one(tmp_path, backend, weight) -> None:
    """Loss, t trajectory, schedule state and parameters after three steps equal the unfused run."""
    plain, params = _taid_train(tmp_path / "plain", False, backend, weight)
    fused, fused_params = _taid_train(tmp_path / "fused", True, backend, weight)
    logged = [
        [(h["loss"], h["taid_t"]) for h in trainer.state.log_history if "taid_t" in h]
        for trainer in (plain, fused)
    ]
    assert len(logged[0]) == 3 and logged[0][-1][1] > logged[0][0][1]  # t moved
    assert logged[1] == pytest.approx(logged[0], rel=1e-5)
    state, fused_state = plain.loss_fn.state_dict(), fused.loss_fn.state_dict()
    assert state.keys() == fused_state.keys()
    for key in state:
        torch.testing.assert_close(fused_state[key], state[key], rtol=1e-5, atol=1e-7)
    for key in params:
        torch.testing.assert_close(fused_params[key], params[key], rtol=1e-4, atol=1e-6)


def test_fused_linear_never_forms_logits(tmp_path, monkeypatch) -> None:
    student, teacher = _model("llama", 0), _model("llama", 1)
    for model in (student, teacher):
        monkeypatch.setattr(model.lm_head, "forward", lambda *a: pytest.fail("the LM head was run"))
    ids = torch.randint(0, VOCAB, (1, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    trainer = DistillationTrainer(
        model=student, args=_args(tmp_path, fused_linear=True), teacher_model=teacher, task="causal_lm"
    )
    assert trainer.compute_loss(student, batch).item() > 0


def test_bad_combinations_and_cli_flag(tmp_path) -> None:
    student, teacher = _model("llama", 0), _model("llama", 1)
    ids = torch.randint(0, VOCAB, (1, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    for kw, message in [
        (dict(loss_name="rlkd"), "supports the divergences, taid and sparse_kl"),
        (dict(sinkhorn_weight=0.5), "cannot add the Sinkhorn term"),
    ]:
        trainer = DistillationTrainer(
            model=student,
            args=_args(tmp_path, fused_linear=True, **kw),
            teacher_model=teacher,
            task="causal_lm",
        )
        with pytest.raises(ValueError, match=message):
            trainer.compute_loss(student, dict(batch))
    parsed = build_parser().parse_args(["lm", "distill", "--output", str(tmp_path), "--fused-linear"])
    assert parsed.fused_linear


def test_fused_taid_resumes_its_schedule(tmp_path) -> None:
    """The schedule's state_dict goes into the checkpoint: resuming at step 2 ends where the full run did."""
    saving = dict(save_strategy="steps", save_steps=2)
    full, _ = _taid_train(tmp_path / "full", True, "torch", 0.0, **saving)
    checkpoint = str(tmp_path / "full" / "checkpoint-2")
    resumed, _ = _taid_train(tmp_path / "resumed", True, "torch", 0.0, resume=checkpoint, **saving)
    t = [[h["taid_t"] for h in r.state.log_history if "taid_t" in h] for r in (full, resumed)]
    assert len(t[0]) == 3 and t[0][-1] > t[0][0]
    assert t[1] == pytest.approx(t[0], rel=1e-6)  # step 3's t was computed after the resume
    torch.testing.assert_close(resumed.loss_fn.state_dict(), full.loss_fn.state_dict())
