"""FSDP2 (``fully_shard``) runs: the student sharded by accelerate's FSDP plugin, the teacher replicated.

The trainer's FSDP is HF's: ``TrainingArguments(fsdp=True, fsdp_config={"version": 2})`` (what
``fastkd lm distill --fsdp`` sets) or ``accelerate launch --use_fsdp --fsdp_version 2``. Accelerate
then calls ``fully_shard`` on each layer of ``model._no_split_modules`` and on the root, so every
rank holds 1/W of the student's parameters, gradients and optimizer state; the embeddings, final
norm and LM head live in the root's group. The teacher is frozen and not wrapped: each rank keeps a
full copy on its device (no gradients or optimizer state, so sharding it would only save its weights,
at the price of an all-gather per layer and step).

What FSDP2 needs from fastkd:

- :func:`enable_fsdp_on_cpu`: accelerate 1.x turns its FSDP plugin on only for accelerator devices
  (``AcceleratorState`` lists MULTI_GPU, MULTI_NPU, ... but not MULTI_CPU), so a CPU/gloo run that asks
  for FSDP would silently train with DDP. ``fully_shard`` itself runs on CPU with gloo (torch 2.13),
  so fastkd sets the distributed type to FSDP there, the way accelerate does on GPUs.
- :func:`as_fsdp_forward`: outside ``forward`` a sharded parameter is a DTensor holding 1/W of the
  rows. The fused-linear loss reads ``get_output_embeddings().weight`` and runs the decoder without
  the LM head, so it runs as a forward of the root module (``register_fsdp_forward_method``): FSDP
  all-gathers the root's parameters before it, registers the reduce-scatter of their gradients, and
  the loss sees the full head weight (tied embeddings are the same gathered parameter).
  :func:`check_gathered` refuses a head FSDP did not gather.
- :func:`set_precision_policy`: with ``bf16`` / ``fp16`` (``--precision``), FSDP2 gathers the
  parameters in that dtype for the forward and backward (``param_dtype``) and reduce-scatters the
  gradients in fp32 (``reduce_dtype``) into the fp32 sharded master weights, which the optimizer
  updates. Accelerate's own default would reduce in the low dtype as well (and it sets no policy at
  all on the CPU path above); a policy given in an accelerate config is kept. The whole loss (student,
  teacher, fused-linear loss) runs under the autocast of the same dtype as well.
- :func:`sharded_full_state_dict`: with sharded checkpoints HF's final ``save_model`` saves no weights;
  the trainer gathers the full state dict and saves it (``from_pretrained`` reads the output folder).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

_FORWARD = "_fastkd_fsdp_forward"


def enable_fsdp_on_cpu(accelerator: Any, plugin_args: dict[str, Any] | None) -> bool:
    """Turn accelerate's FSDP plugin on for a multi-process CPU run that asked for it; True if it did.

    ``plugin_args`` are the TrainingArguments' ``fsdp_plugin_args`` (None without ``fsdp``); the
    environment of ``accelerate launch --use_fsdp`` asks too. Nothing changes on other devices, in
    one process without a process group, or when accelerate has an FSDP plugin already. FSDP1 (not
    on CPU in torch) is a ValueError.
    """
    import torch.distributed as dist
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    asked = plugin_args is not None or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    grouped = dist.is_available() and dist.is_initialized()
    if not asked or not grouped or state.device.type != "cpu" or getattr(state, "fsdp_plugin", None):
        return False
    plugin = FullyShardedDataParallelPlugin(**(plugin_args or {}))
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"FSDP version {plugin.fsdp_version} does not run on CPU (torch's FSDP1 needs an accelerator "
            "device): use FSDP2, fsdp_config={'version': 2} or accelerate launch --fsdp_version 2"
        )
    state.fsdp_plugin = plugin
    # Both shared states: AcceleratorState re-reads PartialState's type when an optimizer is prepared.
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def set_precision_policy(accelerator: Any) -> Any:
    """FSDP2's mixed-precision policy for the run's ``bf16`` / ``fp16``: ``param_dtype`` that dtype,
    ``reduce_dtype`` fp32, outputs as computed. Replaces accelerate's default (everything in the low
    dtype) or a missing policy; keeps one the user chose. Returns the policy (None: no FSDP2 or fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.state.mixed_precision))
    if plugin is None or plugin.fsdp_version != 2 or dtype is None:
        return None
    policy = plugin.mixed_precision_policy
    accelerate_default = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=dtype, output_dtype=dtype)
    if policy is None or policy == accelerate_default:
        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    return plugin.mixed_precision_policy


def sharded_full_state_dict(trainer: Any) -> dict[str, torch.Tensor] | None:
    """The student's full state dict when FSDP checkpoints are sharded (``SHARDED_STATE_DICT``,
    e.g. from an accelerate config), where HF's ``save_model`` writes no weights at all; None
    otherwise. A collective: every rank calls it; rank 0's copy is the one saved."""
    if not trainer.is_fsdp_enabled:
        return None
    if "FULL_STATE_DICT" in str(trainer.accelerator.state.fsdp_plugin.state_dict_type):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(trainer.model, options=options)


def is_fsdp(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP (FSDP2's ``fully_shard`` or FSDP1's wrapper)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return isinstance(model, (FSDPModule, FullyShardedDataParallel))


def _call(module: torch.nn.Module, fn: Callable[[torch.nn.Module], Any]) -> Any:
    return fn(module)


def as_fsdp_forward(model: torch.nn.Module, fn: Callable[[torch.nn.Module], Any]) -> Any:
    """``fn(model)`` as a forward of the FSDP2 module ``model``: its parameters gathered before, their
    gradients reduce-scattered after backward. FSDP1 is a ValueError (its parameters are flat shards
    outside its wrapper's forward)."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if not isinstance(model, FSDPModule):
        raise ValueError(
            "a loss outside the student's forward (fused_linear) needs FSDP2 (fsdp_config={'version': 2}, "
            "accelerate launch --fsdp_version 2): FSDP1 keeps the parameters flat and sharded there"
        )
    if _FORWARD not in model.__dict__:
        setattr(model, _FORWARD, _call.__get__(model))
        register_fsdp_forward_method(model, _FORWARD)
    return getattr(model, _FORWARD)(fn)


def check_gathered(weight: torch.Tensor, what: str) -> None:
    """A ValueError when ``weight`` is still sharded (a DTensor) where the full tensor is needed: its
    module has an FSDP group of its own, which the fused-linear path does not gather."""
    if not torch.distributed.is_available():
        return
    from torch.distributed.tensor import DTensor

    if isinstance(weight, DTensor):
        raise ValueError(
            f"{what} is still sharded by FSDP inside the student's forward (a DTensor of local shape "
            f"{tuple(weight.to_local().shape)}): its module has its own fully_shard group; keep it in the "
            "root's group (accelerate's default transformer-layer wrap does)"
        )
