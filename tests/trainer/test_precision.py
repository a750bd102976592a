"""``--precision bf16`` / ``fp16``: autocast mixed precision with fp32 master weights.

One step of the tiny Llama under bf16 autocast on CPU, logits path and fused-linear path, against the
fp32 step and against each other. Tolerance: bf16 keeps 8 significant bits (unit roundoff
u = 2^-8 ≈ 3.9e-3); the GEMM operands (and, unfused, the logits) are rounded at relative u, so the
loss and the norm-wise gradient differ from fp32 by a few u: at most 4u here. The lower bound (the
bf16 gradient is *not* the fp32 one to 1e-5) shows that the autocast reached the GEMMs at all, which
the fused path (the decoder and the LM head outside ``forward``) and the teacher did not before.
Then the CLI: ``lm distill --precision bf16`` (fused and not), the summary's precision, fp32 weights
saved; the preflight errors."""

from __future__ import annotations

import copy

import pytest
import torch
from cli_helpers import precision_runs, summary
from conftest import LM_DATA
from test_cli_errors import fails
from test_fused_linear_trainer import _args, _batch, _model

from fastkd.trainer import preflight
from fastkd.trainer.cli import main
from fastkd.trainer.trainer import DistillationTrainer

U_BF16 = 2.0**-8


def _step(tmp_path, student, teacher, **kw) -> tuple[torch.Tensor, dict, set]:
    """(loss, gradients, dtypes of the teacher's MLP outputs) of one ``compute_loss`` inside the
    trainer's loss context, as ``training_step`` runs it."""
    trainer = DistillationTrainer(
        model=student, args=_args(tmp_path, **kw), teacher_model=teacher, task="causal_lm"
    )
    seen: set = set()
    hook = teacher.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    batch = _batch(4)
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(
            student, dict(batch), num_items_in_batch=batch["labels"][:, 1:].ne(-100).sum()
        )
    hook.remove()
    loss.backward()
    assert {p.dtype for p in student.parameters()} == {torch.float32}  # master weights stay fp32
    return loss.detach(), {k: p.grad for k, p in student.named_parameters() if p.grad is not None}, seen


def _rel(a: dict, b: dict) -> float:
    num = sum((a[k] - b[k]).pow(2).sum() for k in b) ** 0.5
    return float(num / sum(g.pow(2).sum() for g in b.values()) ** 0.5)


def test_bf16_step_is_close_to_fp32_and_fused_agrees(tmp_path) -> None:
    teacher, student = _model("llama", 1), _model("llama", 0)
    kw = dict(loss_name="forward_kl", temperature=1.5, hard_label_weight=0.2, kd_backend="cpu")
    runs = {}
    for precision in ("fp32", "bf16"):
        for fused in (False, True):
            extra = preflight.precision_arguments(precision)
            runs[precision, fused] = _step(
                tmp_path, copy.deepcopy(student), teacher, fused_linear=fused, **kw, **extra
            )
    for fused in (False, True):
        (loss, grads, seen), (loss32, grads32, seen32) = runs["bf16", fused], runs["fp32", fused]
        assert seen == {torch.bfloat16} and seen32 == {torch.float32}  # the teacher runs under the autocast
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert abs(float(loss - loss32)) <= 4 * U_BF16 * abs(float(loss32))
        assert 1e-5 < _rel(grads, grads32) <= 4 * U_BF16, fused
    (loss, grads, _), (fused_loss, fused_grads, _) = runs["bf16", False], runs["bf16", True]
    assert abs(float(fused_loss - loss)) <= 4 * U_BF16 * abs(float(loss))
    assert _rel(fused_grads, grads) <= 4 * U_BF16


@pytest.mark.slow
def test_lm_distill_bf16_runs(tmp_path, tiny_llama, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file

    runs = precision_runs(str(tmp_path), tiny_llama)
    losses = {}
    for name, argv in runs.items():
        assert main(argv) == 0, capsys.readouterr().err[-3000:]
        result = summary(str(tmp_path / name))
        assert result["precision"] == argv[argv.index("--precision") + 1]
        losses[name] = result["student"]["metrics"]["train_loss"]
        weights = load_file(str(tmp_path / name / "model.safetensors"))
        assert {w.dtype for w in weights.values()} == {torch.float32}, name
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    for name in ("bf16", "bf16-fused"):
        assert losses[name] == pytest.approx(losses["fp32"], rel=4 * U_BF16), losses


def test_precision_errors(tmp_path, tiny_llama, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    lm = ["lm", "distill", "--teacher", tiny_llama, "--student", tiny_llama, "--data", LM_DATA]
    lm += ["--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main([*lm, "--precision", "fp8"])
    assert "--precision: invalid choice: 'fp8'" in capsys.readouterr().err
    fails([*lm, "--precision", "fp16"], "--precision fp16 needs a GPU", capsys)
    glue = ["glue", "distill", "--task", "sst2", "--teacher", tiny_llama, "--student-layers", "1"]
    fails([*glue, "--output", str(tmp_path / "g"), "--precision", "fp16"], "needs a GPU", capsys)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ValueError, match="'Tesla V100' has no bf16 support; use --precision fp16"):
        preflight.check_precision("bf16", "cuda")
    preflight.check_precision("fp16", "cuda")
    with pytest.raises(ValueError, match="got 'half'"):
        preflight.precision_arguments("half")
