"""FSDP2 on 2 gloo processes (batch 2 each): ``fastkd lm distill``, interrupted at step 2 and resumed
to step 3, ends with the student of one uninterrupted process with batch 4. The fused-linear path
(tied embeddings: the LM head is the gathered embedding matrix) runs with ``--fsdp`` (full-state
checkpoints); the logits path (TAID) with the environment of ``accelerate launch --use_fsdp
--fsdp_version 2 --fsdp_state_dict_type SHARDED_STATE_DICT`` (distributed checkpoints; the final
student is gathered by fastkd, HF saves none). With CUDA (the GPU check) the ranks are GPUs, NCCL:
2 of them, or 1 (FSDP of world size 1, batch 4) on a one-GPU machine.

The equality needs the resume to restore everything a step reads: AdamW's moments and step count,
the learning-rate schedule, TAID's t, the data order. The reference run has none of that to restore."""

from __future__ import annotations

import copy
import functools
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from cli_helpers import fsdp_runs, summary, torchrun
from conftest import save_tiny_llama
from safetensors.torch import load_file

from fastkd.trainer import cli
from fastkd.trainer.fsdp import enable_fsdp_on_cpu
from fastkd.trainer.fused_linear import fused_linear_loss, run_as_forward
from fastkd.trainer.models import shrink_layers
from tests.trainer import ddp_run, fsdp_run


def _initial(name: str, teacher: str, tied: str) -> dict[str, torch.Tensor]:
    """The student before training (the logits run cuts layer 0 of the teacher, as --student-layers 1)."""
    from transformers import AutoModelForCausalLM

    if name == "logits":
        return shrink_layers(AutoModelForCausalLM.from_pretrained(teacher), 1).state_dict()
    return load_file(f"{tied}/model.safetensors")


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_fsdp_run_resumes_and_equals_one_process_with_the_doubled_batch(tmp_path, tiny_llama) -> None:
    tied = save_tiny_llama(str(tmp_path / "tied"), layers=1, seed=1, tied=True)
    one, two = tmp_path / "one", tmp_path / "two"
    for argv in fsdp_runs(str(one), tiny_llama, tied, 4).values():
        assert cli.main(argv) == 0
    ranks = min(2, torch.cuda.device_count()) if torch.cuda.is_available() else 2
    out = torchrun(ranks, fsdp_run.__file__, str(two), tiny_llama, tied, str(4 // ranks))
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("logits", "fused"):
        ref, got = load_file(one / name / "model.safetensors"), load_file(two / name / "model.safetensors")
        assert ref.keys() <= got.keys()
        if name == "fused":  # FSDP's full state dict may also list the tied head: the same matrix
            embedding = got["model.embed_tokens.weight"]
            assert torch.equal(got.get("lm_head.weight", embedding), embedding)
        initial = _initial(name, tiny_llama, tied)
        for key, value in ref.items():
            update = value - initial[key]
            assert update.abs().max() > 0, (name, key)  # it trains
            err = (got[key] - value).abs().max() / update.abs().max()
            assert err < 1e-3, (name, key, float(err))
        assert summary(str(two / name))["world_size"] == ranks and summary(str(two / name))["fsdp"] is True
        assert summary(str(one / name))["fsdp"] is False


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _fused_loss(student: torch.nn.Module, teacher: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    args = SimpleNamespace(
        loss_name="jsd",
        loss_options={"beta": 0.3},
        temperature=1.5,
        hard_label_weight=0.2,
        scale_by_temperature_squared=False,
        kd_backend="auto",
    )
    trainer = SimpleNamespace(
        args=args,
        task="causal_lm",
        sinkhorn_fn=None,
        teacher_signal="logits",
        teacher=teacher,
        uses_kd=True,
        _sums={},
    )
    return fused_linear_loss(trainer, student, {"input_ids": ids, "labels": ids}, None)


def test_fused_linear_under_fully_shard_sees_the_gathered_head(one_process_group) -> None:
    """In one process (a gloo group of 1): with the head in the root's FSDP group the fused-linear
    loss and its gradients are the unsharded model's (tied embeddings); a head with a group of its own
    is refused."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    shard = functools.partial(fully_shard, mesh=init_device_mesh("cpu", (1,)))  # CPU, also with CUDA

    teacher, plain = ddp_run.llama(1, 300), ddp_run.llama(0, 300)
    plain.config.tie_word_embeddings = True
    plain.lm_head.weight = plain.model.embed_tokens.weight
    sharded, own_head = copy.deepcopy(plain), ddp_run.llama(0, 300)  # FSDP refuses a tied head of its own
    for layer in sharded.model.layers:
        shard(layer)
    shard(sharded)
    ids = torch.randint(1, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    expected, got = _fused_loss(plain, teacher, ids), _fused_loss(sharded, teacher, ids)
    expected.backward()
    got.backward()
    torch.testing.assert_close(got, expected)
    grads = {name: p.grad.full_tensor() for name, p in sharded.named_parameters()}
    for name, p in plain.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7)
    shard(own_head.lm_head)
    shard(own_head)
    with pytest.raises(ValueError, match="LM-head weight of FSDPLlamaForCausalLM is still sharded by FSDP"):
        _fused_loss(own_head, teacher, ids)


def test_fsdp1_is_refused_where_it_cannot_work(one_process_group) -> None:
    """FSDP1 does not run on CPU (torch says so only once the model is wrapped), and outside forward
    its parameters are flat shards, which the fused-linear loss cannot read."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    accelerator = SimpleNamespace(state=SimpleNamespace(device=torch.device("cpu"), fsdp_plugin=None))
    with pytest.raises(ValueError, match="FSDP version 1 does not run on CPU"):
        enable_fsdp_on_cpu(accelerator, {"fsdp_version": 1})
    assert accelerator.state.fsdp_plugin is None
    fsdp1 = object.__new__(FullyShardedDataParallel)  # cannot be built on CPU; the type is what counts
    with pytest.raises(ValueError, match="needs FSDP2"):
        run_as_forward(fsdp1, lambda module: None)
