"""fastkd's TRL trainers against TRL's own, one step on tiny models; on-policy runs; other losses."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="trl is not installed (pip install -e '.[trl]')")

import trl
from trl.experimental.gkd import GKDConfig as TRLGKDConfig
from trl.experimental.gkd import GKDTrainer as TRLGKDTrainer

import fastkd.losses as L
from fastkd.integrations.trl import (
    DistillationConfig,
    DistillationTrainer,
    GKDConfig,
    GKDTrainer,
    generalized_jsd_loss,
)
from tests.trl_helpers import (
    COMPLETIONS,
    PROMPTS,
    assert_same_update,
    distillation_trainer,
    gkd_collate,
    gkd_trainer,
    parameter_update,
    tokenizer,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _fixed_batch() -> dict[str, torch.Tensor]:
    return gkd_collate([{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS, strict=True)])


def _distillation_batch() -> dict[str, torch.Tensor]:
    """The prompt/completion tensors TRL's DistillationTrainer builds after generation."""
    tok, batch = tokenizer(), _fixed_batch()
    prompt_ids, prompt_mask = batch["prompts"], batch["prompt_attention_mask"]
    completions = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in COMPLETIONS]
    n = max(map(len, completions))
    completion_ids = torch.tensor([c + [tok.pad_token_id] * (n - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (n - len(c)) for c in completions])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gkd_step_matches_trl(tmp_path, beta: float) -> None:
    theirs = gkd_trainer(TRLGKDTrainer, TRLGKDConfig, str(tmp_path / "trl"), beta=beta)
    ours = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path / "fastkd"), beta=beta)
    their_update, our_update = parameter_update(theirs), parameter_update(ours)
    their_loss, our_loss = theirs.state.log_history[0]["loss"], ours.state.log_history[0]["loss"]
    assert their_loss > 1e-2
    assert our_loss == pytest.approx(their_loss, rel=1e-5)
    assert_same_update(our_update, their_update)


def test_gkd_on_trls_own_config(tmp_path) -> None:
    trainer = gkd_trainer(GKDTrainer, TRLGKDConfig, str(tmp_path), beta=0.3)
    assert trainer.fastkd_loss.divergence == "jsd" and dict(trainer.fastkd_loss.params) == {"beta": 0.3}
    assert GKDTrainer.generalized_jsd_loss is generalized_jsd_loss


@pytest.mark.parametrize("kind", ["llama", "gemma2", "cohere"])
def test_distillation_step_matches_trl(tmp_path, kind: str) -> None:
    # Built and trained one after the other: each generates from the RNG state its own init seeded.
    theirs = distillation_trainer(trl.DistillationTrainer, trl.DistillationConfig, str(tmp_path / "t"), kind)
    their_update = parameter_update(theirs)
    ours = distillation_trainer(DistillationTrainer, DistillationConfig, str(tmp_path / "f"), kind)
    our_update = parameter_update(ours)
    their_log, our_log = theirs.state.log_history[0], ours.state.log_history[0]
    assert their_log["loss"] > 1e-2
    assert our_log["loss"] == pytest.approx(their_log["loss"], rel=1e-5)
    assert our_log["entropy"] == pytest.approx(their_log["entropy"], rel=1e-5)
    assert set(our_log) == set(their_log)
    assert_same_update(our_update, their_update)


def test_gemma2_softcap_is_applied(tmp_path) -> None:
    """The cap of 2 changes the loss: without it the trainer would not match TRL above."""
    trainer = distillation_trainer(DistillationTrainer, DistillationConfig, str(tmp_path), "gemma2")
    batch = _distillation_batch()
    with torch.no_grad():
        capped = trainer._compute_loss(trainer.model, batch, None)[0]
        for model in (trainer.model, trainer.teacher_model):
            model.config.final_logit_softcapping = None
        uncapped = trainer._compute_loss(trainer.model, batch, None)[0]
    assert abs(capped.item() - uncapped.item()) > 0.05 * uncapped.item()


def _gkd_loss(trainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch))


def test_gkd_on_policy_steps_decrease_loss(tmp_path) -> None:
    trainer = gkd_trainer(
        GKDTrainer, GKDConfig, str(tmp_path), lmbda=1.0, max_steps=6, optim="adamw_torch", learning_rate=5e-2
    )
    batch = _fixed_batch()
    before = _gkd_loss(trainer, batch)
    trainer.train()
    assert _gkd_loss(trainer, batch) < 0.98 * before


def test_distillation_on_policy_steps_decrease_loss(tmp_path) -> None:
    trainer = distillation_trainer(
        DistillationTrainer,
        DistillationConfig,
        str(tmp_path),
        max_steps=16,
        optim="adamw_torch",
        learning_rate=5e-3,
    )
    batch = _distillation_batch()
    with torch.no_grad():
        before = trainer._compute_loss(trainer.model, batch, None)[0]
    trainer.train()
    with torch.no_grad():
        after = trainer._compute_loss(trainer.model, batch, None)[0]
    assert after < 0.98 * before
    assert all(h["entropy"] > 0 for h in trainer.state.log_history if "entropy" in h)


def _gkd_logits(trainer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        student = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher = trainer.teacher_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    return student[:, :-1], teacher[:, :-1], batch["labels"][:, 1:]


@pytest.mark.parametrize(
    ("divergence", "expected"),
    [
        ("skew_kl:0.2", lambda s, t, y: L.skew_kl(s, t, alpha=0.2, labels=y, backend="torch")),
        ("tvd", lambda s, t, y: L.tvd(s, t, labels=y, backend="torch")),
    ],
)
def test_gkd_with_another_divergence(tmp_path, divergence: str, expected) -> None:
    trainer = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path), fastkd_divergence=divergence)
    batch = _fixed_batch()
    assert _gkd_loss(trainer, batch).item() == pytest.approx(
        expected(*_gkd_logits(trainer, batch)).item(), rel=1e-5
    )
    trainer.train()
    assert trainer.state.log_history[0]["loss"] > 0


def test_gkd_top_k_teacher(tmp_path) -> None:
    """Top-k is sparse_kl on the teacher's top-k; with k = V it is the full forward KL."""
    batch = _fixed_batch()
    full = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path), fastkd_divergence="forward_kl")
    vocab = len(tokenizer())
    every = gkd_trainer(
        GKDTrainer, GKDConfig, str(tmp_path), fastkd_divergence="forward_kl", fastkd_teacher_topk=vocab
    )
    assert _gkd_loss(every, batch).item() == pytest.approx(_gkd_loss(full, batch).item(), rel=1e-5)
    top4 = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path), beta=0.0, fastkd_teacher_topk=4)
    s, t, y = _gkd_logits(top4, batch)
    indices, logprobs = L.teacher_topk(t, 4)
    expected = L.sparse_kl(s, indices, logprobs, labels=y, backend="torch")
    assert _gkd_loss(top4, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    top4.train()


def test_distillation_with_another_divergence_and_hard_labels(tmp_path) -> None:
    trainer = distillation_trainer(
        DistillationTrainer,
        DistillationConfig,
        str(tmp_path),
        fastkd_divergence="reverse_kl",
        fastkd_hard_label_weight=0.3,
    )
    batch = _distillation_batch()
    with torch.no_grad():
        loss, entropy_sum, n_valid = trainer._compute_loss(trainer.model, batch, None)
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        k = batch["completion_ids"].shape[1]
        s = trainer.model(input_ids=ids, attention_mask=mask).logits[:, -k - 1 : -1]
        t = trainer.teacher_model(input_ids=ids, attention_mask=mask).logits[:, -k - 1 : -1]
    valid = batch["completion_mask"].bool()
    labels = batch["completion_ids"].masked_fill(~valid, -100)
    kd = L.reverse_kl(s, t, labels=labels, backend="torch")
    ce = torch.nn.functional.cross_entropy(s[valid], labels[valid])
    assert loss.item() == pytest.approx((0.7 * kd + 0.3 * ce).item(), rel=1e-5)
    assert n_valid.item() == valid.sum().item()
    q = torch.log_softmax(s[valid], -1)
    assert entropy_sum.item() == pytest.approx(-(q.exp() * q).sum().item(), rel=1e-5)


def test_distillation_top_k_teacher(tmp_path) -> None:
    """The top-k teacher through fused_linear_kd: with k = V it is the full forward KL."""
    vocab, batch = len(tokenizer()), _distillation_batch()
    losses = []
    for k in (None, vocab):
        trainer = distillation_trainer(
            DistillationTrainer, DistillationConfig, str(tmp_path), beta=0.0, fastkd_teacher_topk=k
        )
        with torch.no_grad():
            losses.append(trainer._compute_loss(trainer.model, batch, None)[0].item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] > 0


def test_gkd_with_a_teacher_cache(tmp_path) -> None:
    """Off-policy batches from `fastkd lm cache-teacher` give the live top-k teacher's loss, and the
    teacher does not run on them; an on-policy configuration is refused."""
    from fastkd.integrations.trl.teacher_cache import cache_dataset
    from fastkd.trainer.lm.cache import cache_teacher
    from tests.trl_helpers import LM_DATA, causal_lm

    teacher_dir = str(tmp_path / "teacher")
    causal_lm(1, 2, sharp=20.0).save_pretrained(teacher_dir)
    tokenizer().save_pretrained(teacher_dir)
    cache_teacher(teacher_dir, LM_DATA, 4, str(tmp_path / "cache"), max_samples=4)
    examples, collate = cache_dataset(str(tmp_path / "cache"), tokenizer().pad_token_id, len(tokenizer()))
    batch = collate([examples[i] for i in range(len(examples))])
    live = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path / "live"), beta=0.0, fastkd_teacher_topk=4)
    live_batch = {k: v for k, v in batch.items() if not k.startswith("teacher_")}
    cached = gkd_trainer(GKDTrainer, GKDConfig, str(tmp_path / "cached"), data=(examples, collate), beta=0.0)
    cached.teacher_model.forward = None  # a cached batch must not run the teacher
    assert _gkd_loss(cached, batch).item() == pytest.approx(_gkd_loss(live, live_batch).item(), rel=1e-5)
    cached.train()
    assert cached.state.log_history[0]["loss"] > 0
    cached.lmbda = 0.5
    with pytest.raises(ValueError, match=r"off-policy only: set lmbda=0\.0"):
        _gkd_loss(cached, batch)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
@pytest.mark.parametrize("divergence", [None, "skew_reverse_kl:0.3"])
def test_gkd_fused_linear_matches_the_logit_path(tmp_path, kind: str, divergence: str | None) -> None:
    """fastkd_fused_linear=True: the same loss and update as the logit path (Gemma-2: softcap 2)."""
    from tests.trl_helpers import causal_lm

    extra = {"final_logit_softcapping": 2.0} if kind == "gemma2" else {}
    student = causal_lm(0, kind=kind, **extra)
    updates, losses = [], []
    for fused in (False, True):
        trainer = gkd_trainer(
            GKDTrainer,
            GKDConfig,
            str(tmp_path / str(fused)),
            student=student,
            fastkd_fused_linear=fused,
            fastkd_divergence=divergence,
            fastkd_hard_label_weight=0.2,
        )
        trainer.teacher_model = causal_lm(1, 2, kind=kind, sharp=20.0, **extra)
        updates.append(parameter_update(trainer))
        losses.append(trainer.state.log_history[0]["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert_same_update(updates[1], updates[0])
