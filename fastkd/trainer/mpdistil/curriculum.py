"""Phase 4: curriculum learning. A policy over tasks picks the task whose quiz batch the student trains on
next; it is rewarded on the main task's quiz batches for each step where the student beats T′, and learns
by REINFORCE (γ 0.99, mean baseline). The best episode on dev is kept.

One episode walks once over the main task's quiz batches. Step t: train on a random quiz batch of the
current task with ``curriculum_loss``; compute the state s_t = w·W_pool + b (a linear map of the student
pooler's weight matrix W_pool [H, H] to [H]) and sample the next task a_t ~ softmax(A·s_t); reward
r_t = ``quiz_reward`` on main-task quiz batch t divided by the quiz size. The first task is drawn uniformly.
After the episode: policy loss −mean_t G_t·log π(a_t|s_t) with ``discounted_returns``.

Quirks of the released code (notmyname16/MPDistil, ``trainer_superglue.py``), reproduced by default, each
fixed by a ``CurriculumOptions`` flag:

- ``detach_state=False``: s_t is not detached, so the policy gradient also flows into the student's pooler
  (and the state map) and is applied by the student's optimizer. ``True`` detaches W_pool.
- ``step_every_batch=False``: the student's gradients accumulate over the whole episode (clipped to norm 1
  after each step) and are applied once, with the policy update, at its end; the rewards of an episode
  therefore all see the same student. ``True`` steps the student after every batch (needs detach_state:
  a state graph through weights changed in place cannot be back-propagated).
- ``relative_discount=False``: G_t = Σ_{j≥t} γ^j·r_j (absolute step index). ``True``: Σ_{j≥t} γ^(j−t)·r_j.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical
from tqdm.auto import tqdm

from fastkd.trainer.mpdistil.losses import curriculum_loss, discounted_returns, quiz_reward, reinforce_loss
from fastkd.trainer.mpdistil.model import TaskModel
from fastkd.trainer.mpdistil.phases import Best, evaluate, to_device


@dataclass(frozen=True)
class CurriculumOptions:
    """Phase-4 settings (defaults: the released code's, quirks included; see the module docstring)."""

    episodes: int = 200
    reward: str = "binary"
    gamma: float = 0.99
    policy_lr: float = 1e-3
    student_lr: float = 3e-5
    max_grad_norm: float = 1.0
    detach_state: bool = False
    step_every_batch: bool = False
    relative_discount: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.reward not in ("binary", "real"):
            raise ValueError(f"reward must be 'binary' or 'real', got {self.reward!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.step_every_batch and not self.detach_state:
            raise ValueError("step_every_batch needs detach_state (the state graph goes through the pooler)")


class Policy(nn.Module):
    """π(a | s) = softmax(A·s + c) over ``num_tasks`` with s = ``state(W_pool)`` = W_pool·w + b ∈ R^H."""

    def __init__(self, hidden: int, num_tasks: int) -> None:
        super().__init__()
        self.state_map = nn.Linear(hidden, 1)
        self.actions = nn.Linear(hidden, num_tasks)

    def state(self, pooler_weight: torch.Tensor) -> torch.Tensor:
        return self.state_map(pooler_weight).reshape(1, -1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.actions(states), dim=-1)


def pooler_weight(student: TaskModel) -> torch.Tensor:
    """W_pool, the [H, H] weight of the student encoder's pooler."""
    pooler = getattr(student.encoder, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense"):
        raise ValueError(
            f"{type(student.encoder).__name__} has no pooler.dense: the curriculum state needs it"
        )
    return pooler.dense.weight


def policy_optimizer(policy: Policy, opts: CurriculumOptions) -> torch.optim.Optimizer:
    """AdamW: the action layer at the policy lr (1e-3); the state map at the student lr (in the released
    code it belongs to the student model and its optimiser)."""
    groups = [
        {"params": policy.actions.parameters(), "lr": opts.policy_lr},
        {"params": policy.state_map.parameters(), "lr": opts.student_lr},
    ]
    return torch.optim.AdamW(groups)


def _train_step(student: TaskModel, meta: TaskModel, batch: dict, task: str, opts: CurriculumOptions) -> None:
    student.train()
    out = student(batch, task)
    meta.eval()
    with torch.no_grad():
        on_student = meta.head(task, out.pooled)
    curriculum_loss(out.logits, on_student, batch["labels"]).backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), opts.max_grad_norm)


@torch.no_grad()
def _reward(student: TaskModel, meta: TaskModel, batch: dict, kind: str) -> float:
    student.eval(), meta.eval()
    return float(quiz_reward(student(batch).logits, meta(batch).logits, batch["labels"], kind))


def run_episode(
    student: TaskModel,
    meta: TaskModel,
    policy: Policy,
    quiz: dict[str, list[dict]],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    opts: CurriculumOptions,
    rng: random.Random,
) -> dict[str, Any]:
    """One episode over the main task's quiz batches ``quiz[student.main_task]`` (``quiz``: task -> its quiz
    batches); updates student and policy. Returns {"reward", "trajectory", "policy_loss"}."""
    s_opt, p_opt = optimizers
    tasks, main = list(quiz), student.main_task
    device = next(student.parameters()).device
    quiz_size = sum(len(b["labels"]) for b in quiz[main])
    task, trajectory, states, actions, rewards = rng.choice(tasks), [], [], [], []
    for main_batch in quiz[main]:
        trajectory.append(task)
        _train_step(student, meta, to_device(rng.choice(quiz[task]), device), task, opts)
        if opts.step_every_batch:
            s_opt.step()
            s_opt.zero_grad()
        weight = pooler_weight(student)
        state = policy.state(weight.detach().clone() if opts.detach_state else weight)  # clone: own version
        with torch.no_grad():
            action = int(Categorical(policy(state)[0]).sample())
        states.append(state)
        actions.append(action)
        rewards.append(_reward(student, meta, to_device(main_batch, device), opts.reward) / quiz_size)
        task = tasks[action]
    returns = discounted_returns(torch.tensor(rewards), opts.gamma, not opts.relative_discount).to(device)
    loss = reinforce_loss(policy(torch.cat(states)), torch.tensor(actions, device=device), returns)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), opts.max_grad_norm)
    p_opt.step()
    p_opt.zero_grad()
    if not opts.step_every_batch:  # the episode's accumulated gradients (and the policy's, quirk)
        s_opt.step()
        s_opt.zero_grad()
    return {"reward": sum(rewards), "trajectory": trajectory, "policy_loss": float(loss.detach())}


def run_curriculum(
    student: TaskModel,
    meta: TaskModel,
    quiz: dict[str, list[dict]],
    dev_loader: Any,
    opts: CurriculumOptions,
    seed: int = 42,
    dev_groups: Any = None,
) -> dict[str, Any]:
    """``opts.episodes`` episodes; ``student`` ends with the weights of the best episode on dev.
    Returns {"metrics", "best_episode", "episodes": [{reward, trajectory, policy_loss, metrics, wall_s}]}."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    policy = Policy(student.model.config.hidden_size, len(quiz)).to(next(student.parameters()).device)
    s_opt = torch.optim.AdamW(student.parameters(), lr=opts.student_lr)
    p_opt = policy_optimizer(policy, opts)
    best = Best(student.main_task, key="episode")
    for episode in tqdm(range(opts.episodes), desc="curriculum", leave=False):
        start = time.perf_counter()
        row = run_episode(student, meta, policy, quiz, (s_opt, p_opt), opts, rng)
        row["metrics"] = evaluate(student, student.main_task, dev_loader, dev_groups)
        row.update(episode=episode, wall_s=round(time.perf_counter() - start, 3))
        best.update(student, row)
    result = best.restore(student)
    result["episodes"] = result.pop("history")
    return result
