"""``fused_linear=True``: one training step equals the unfused step (loss and updated parameters) on tiny
Llama, Gemma-2 (final-logit softcap) and a tied-embedding model built from configs; bad combinations."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from fastkd.trainer.args import DistillationArguments
from fastkd.trainer.cli import _build_parser
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
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    labels = input_ids.clone()
    labels[:, :4] = -100
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    student, teacher = _model(kind, 0), _model(kind, 1)
    kw = dict(loss_name=loss_name, temperature=1.5, kd_backend="cpu", **options)
    loss, params = _step(tmp_path, copy.deepcopy(student), teacher, batch, **kw)
    fused_loss, fused_params = _step(
        tmp_path, copy.deepcopy(student), teacher, batch, fused_linear=True, **kw
    )
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-6)
    initial = student.state_dict()
    assert any(not torch.equal(params[k], initial[k]) for k in params)
    for key in params:
        torch.testing.assert_close(fused_params[key], params[key], rtol=1e-5, atol=1e-6)


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
        (dict(loss_name="rlkd"), "supports the divergences and sparse_kl"),
        (dict(scale_by_temperature_squared=True, hard_label_weight=0.5), "cannot also scale"),
    ]:
        trainer = DistillationTrainer(
            model=student,
            args=_args(tmp_path, fused_linear=True, **kw),
            teacher_model=teacher,
            task="causal_lm",
        )
        with pytest.raises(ValueError, match=message):
            trainer.compute_loss(student, dict(batch))
    parsed = _build_parser().parse_args(["lm", "distill", "--output", str(tmp_path), "--fused-linear"])
    assert parsed.fused_linear
