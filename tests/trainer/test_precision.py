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
import os
from types import SimpleNamespace

import pytest
import torch
from cli_helpers import free_port, precision_runs, summary
from conftest import LM_DATA
from test_cli_errors import fails
from test_fused_linear_trainer import _args, _batch, _model

from fastkd.trainer import preflight
from fastkd.trainer.cli import main
from fastkd.trainer.fsdp import set_precision_policy
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
def test_lm_distill_bf16_runs(tmp_path, tiny_llama, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """The runs of ``precision_runs``: train losses within 4u of the fp32 run's, fp32 weights saved,
    the precision and the teacher's dtype in the summary and in the teacher's weights."""
    from safetensors.torch import load_file

    from fastkd.trainer.lm import run

    loaded = []
    load = run.load_teacher
    monkeypatch.setattr(run, "load_teacher", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    runs = precision_runs(str(tmp_path), tiny_llama)
    losses = {}
    for name, argv in runs.items():
        loaded.clear()
        assert main(argv) == 0, capsys.readouterr().err[-3000:]
        result = summary(str(tmp_path / name))
        assert result["precision"] == argv[argv.index("--precision") + 1]
        teacher_dtype = argv[argv.index("--teacher-dtype") + 1] if "--teacher-dtype" in argv else "fp32"
        assert result["teacher_dtype"] == teacher_dtype
        want = torch.bfloat16 if teacher_dtype == "bf16" else torch.float32
        assert {p.dtype for p in loaded[0].parameters()} == {want}, name  # the teacher
        # --student-layers cuts the student from a second, fp32 load when the teacher is rounded
        assert len(loaded) == 1 + (teacher_dtype != "fp32"), name
        assert all({p.dtype for p in m.parameters()} == {torch.float32} for m in loaded[1:]), name
        losses[name] = result["student"]["metrics"]["train_loss"]
        weights = load_file(str(tmp_path / name / "model.safetensors"))
        assert {w.dtype for w in weights.values()} == {torch.float32}, name
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    for name in ("bf16", "bf16-fused", "bf16-teacher", "fp32-bf16-teacher-fused"):
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


def _accelerator(precision: str, policy: object = "accelerate") -> SimpleNamespace:
    """An accelerator's state with an FSDP2 plugin: the policy accelerate sets for ``precision``
    ("accelerate"), none, or the given one."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    if policy == "accelerate":
        plugin.set_mixed_precision(precision)
    else:
        plugin.mixed_precision_policy = policy
    return SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin, mixed_precision=precision))


def test_fsdp2_policy_gathers_in_the_autocast_dtype_and_reduces_in_fp32() -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        for given in ("accelerate", None):
            policy = set_precision_policy(_accelerator(precision, given))
            assert policy == MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    own = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    assert set_precision_policy(_accelerator("bf16", own)) is own  # the user's choice is kept
    assert set_precision_policy(_accelerator("no", None)) is None
    assert set_precision_policy(SimpleNamespace(state=SimpleNamespace(mixed_precision="bf16"))) is None


@pytest.mark.slow
def test_fsdp2_bf16_run_forwards_in_bf16_and_reduces_in_fp32(tmp_path, tiny_llama, monkeypatch) -> None:
    """``lm distill --fsdp --precision bf16 --fused-linear`` in a gloo group of one process (as
    ``torchrun --nproc-per-node 1``): the student's weights reach its Linear layers and the fused
    loss in bf16, FSDP reduce-scatters the gradients in fp32, and the saved student is fp32."""
    import torch.distributed as dist
    import torch.distributed.fsdp._fully_shard._fsdp_param_group as group
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file

    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_PORT=free_port())
    before = dict(os.environ)  # HF's fsdp=True also sets ACCELERATE_USE_FSDP etc.: all are restored
    os.environ.update(env, MASTER_ADDR="127.0.0.1")
    seen: set = set()
    linear, reduce = torch.nn.functional.linear, group.foreach_reduce

    def recording_linear(x, weight, bias=None):
        if weight.requires_grad:  # the student's (the teacher is frozen)
            seen.add(("forward", weight.dtype))
        return linear(x, weight, bias)

    def recording_reduce(params, grads, *args, **kw):
        seen.add(("reduce", args[4]))  # foreach_reduce(params, grads, group, stream, comm, orig, reduce)
        return reduce(params, grads, *args, **kw)

    monkeypatch.setattr(torch.nn.functional, "linear", recording_linear)
    monkeypatch.setattr(group, "foreach_reduce", recording_reduce)
    argv = precision_runs(str(tmp_path), tiny_llama)["bf16-fused"] + ["--fsdp"]
    try:
        assert main(argv) == 0
    finally:
        AcceleratorState._reset_state(True)
        if dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(before)
    assert seen == {("forward", torch.bfloat16), ("reduce", torch.float32)}
    assert summary(str(tmp_path / "bf16-fused"))["fsdp"] is True
    weights = load_file(str(tmp_path / "bf16-fused" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
