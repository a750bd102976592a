"""MPDistil loss pieces against independent fp64 formulas (numpy loops) on fixed tensors, and the
REINFORCE update against a hand computation on a 2-task toy with fixed rewards."""

import math

import numpy as np
import pytest
import torch

from fastkd.trainer.losses import build_loss
from fastkd.trainer.mpdistil import losses as L
from fastkd.trainer.mpdistil.curriculum import CurriculumOptions, Policy

torch.manual_seed(0)
Z_S = torch.randn(6, 3) * 3
Z_T = torch.randn(6, 3) * 3
Y = torch.tensor([0, 2, 1, 1, 0, 2])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([-math.log(softmax(z[i])[y[i]]) for i in range(len(y))]))


def p_gold(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([softmax(z[i])[y[i]] for i in range(len(y))])


S, T, YN = Z_S.double().numpy(), Z_T.double().numpy(), Y.numpy()


@pytest.mark.parametrize("tau", [1.0, 5.0])
def test_prob_mse(tau: float) -> None:
    diff = softmax(S / tau) - softmax(T / tau)
    expected = tau**2 * sum(diff[i, c] ** 2 for i in range(6) for c in range(3)) / 18
    assert float(L.prob_mse(Z_S, Z_T, tau)) == pytest.approx(expected, rel=1e-5)
    registered = build_loss("prob_mse")(Z_S, Z_T, temperature=tau, mask=None, num_items_in_batch=None)
    assert float(registered) == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor([True, True, False, True, False, True])
    masked = build_loss("prob_mse")(Z_S, Z_T, temperature=tau, mask=mask, num_items_in_batch=None)
    rows = [tau**2 * np.mean(diff[i] ** 2) for i in range(6) if mask[i]]
    assert float(masked) == pytest.approx(np.mean(rows), rel=1e-5)


def test_prob_mse_regression_and_bad_temperature() -> None:
    a, b = torch.randn(5, 1), torch.randn(5, 1)
    assert float(L.prob_mse(a, b)) == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        L.prob_mse(Z_S, Z_T, 0.0)


def _hidden(layers: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(4, 5, 8, generator=g) for _ in range(layers + 1))


def test_pkd_default_and_custom_layer_maps() -> None:
    student, teacher = _hidden(3, 1), _hidden(6, 2)

    def oracle(pairs: list[tuple[int, int]]) -> float:
        total = 0.0
        for ls, lt in pairs:
            s = student[ls][:, 0].double().numpy()
            t = teacher[lt][:, 0].double().numpy()
            s = s / np.linalg.norm(s, axis=-1, keepdims=True)
            t = t / np.linalg.norm(t, axis=-1, keepdims=True)
            total += np.mean((s - t) ** 2)
        return total / len(pairs)

    assert float(build_loss("pkd")(student, teacher)) == pytest.approx(oracle([(1, 1), (2, 2)]), rel=1e-5)
    custom = build_loss("pkd", teacher_layers=[2, 5])(student, teacher)
    assert float(custom) == pytest.approx(oracle([(1, 2), (2, 5)]), rel=1e-5)
    with pytest.raises(ValueError, match=r"pkd layers must be 2 teacher layers in 1..6"):
        build_loss("pkd", teacher_layers=[2, 7])(student, teacher)
    one_layer = _hidden(1, 3)
    assert float(build_loss("pkd")(one_layer, teacher)) == 0.0


def test_student_loss() -> None:
    pkd_term = torch.tensor(0.01)
    kd = 25 * np.mean((softmax(S / 5) - softmax(T / 5)) ** 2)
    expected = 0.5 * kd + 0.5 * ce(S, YN) + 100 * 0.01
    assert float(L.student_loss(Z_S, Z_T, Y, pkd_term)) == pytest.approx(expected, rel=1e-5)


def test_meta_losses() -> None:
    collaborative = 0.5 * ce(T, YN) + 0.5 * ce(S, YN)
    assert float(L.collaborative_loss(Z_T, Z_S, Y)) == pytest.approx(collaborative, rel=1e-5)
    competitive = ce(T, YN) - p_gold(T, YN).mean() + p_gold(S, YN).mean()
    assert float(L.competitive_loss(Z_T, Z_S, Y)) == pytest.approx(competitive, rel=1e-5)
    y_reg, on_t, on_s = torch.randn(6), torch.randn(6, 1), torch.randn(6, 1)
    mse = lambda z: float(((z.view(-1) - y_reg) ** 2).mean())
    score = lambda z: float(-(y_reg - z.view(-1)).abs().mean())
    assert float(L.collaborative_loss(on_t, on_s, y_reg)) == pytest.approx(0.5 * mse(on_t) + 0.5 * mse(on_s))
    comp = mse(on_t) - score(on_t) + score(on_s)
    assert float(L.competitive_loss(on_t, on_s, y_reg)) == pytest.approx(comp, rel=1e-5)


def test_curriculum_loss_and_its_gradient() -> None:
    z = Z_S.clone().requires_grad_(True)
    loss = L.curriculum_loss(z, Z_T, Y)
    expected = ce(S, YN) - p_gold(S, YN).mean() + p_gold(T, YN).mean()
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    p = softmax(S)
    onehot = np.eye(3)[YN]
    py = p_gold(S, YN)[:, None]
    # d/dz [CE - mean p_y]: (p - onehot)/B - p_y·(onehot - p)/B; the T′ term carries no gradient
    grad = (p - onehot) / 6 - py * (onehot - p) / 6
    np.testing.assert_allclose(z.grad.double().numpy(), grad, rtol=1e-4, atol=1e-7)


def test_rewards() -> None:
    s, t = p_gold(S, YN), p_gold(T, YN)
    assert float(L.quiz_reward(Z_S, Z_T, Y, "binary")) == float(np.sum(s > t))
    assert float(L.quiz_reward(Z_S, Z_T, Y, "real")) == pytest.approx(float(np.sum(s - t)), rel=1e-5)
    y_reg, zs, zt = (
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([[1.1], [2.5], [2.0]]),
        torch.tensor([[1.5], [2.1], [3.2]]),
    )
    assert float(L.quiz_reward(zs, zt, y_reg, "binary")) == 1.0  # only the first: |0.1| < |0.5|
    assert float(L.quiz_reward(zs, zt, y_reg, "real")) == pytest.approx(
        (0.5 - 0.1) + (0.1 - 0.5) + (0.2 - 1.0)
    )
    with pytest.raises(ValueError, match="reward must be 'binary' or 'real'"):
        L.quiz_reward(Z_S, Z_T, Y, "other")


REWARDS = torch.tensor([1.0, 0.0, 2.0])


def test_discounted_returns_quirk_and_fixed() -> None:
    g = 0.9
    quirk = [1 + 0 + g**2 * 2, 0 + g**2 * 2, g**2 * 2]  # G_t = sum_{j>=t} g^j r_j
    fixed = [1 + g * 0 + g**2 * 2, 0 + g * 2, 2]  # G_t = sum_{j>=t} g^(j-t) r_j
    for absolute, raw in ((True, quirk), (False, fixed)):
        expected = np.array(raw) - np.mean(raw)
        got = L.discounted_returns(REWARDS, g, absolute_index=absolute).double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_reinforce_update_by_hand() -> None:
    """2 tasks, hidden 2, three fixed states and actions, fixed rewards: one SGD step of the policy's
    action layer matches ∂/∂W of −mean_t G_t·log softmax(W s_t + c)[a_t] written out by hand."""
    torch.manual_seed(0)
    policy = Policy(2, 2)
    states = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    actions = torch.tensor([0, 1, 1])
    returns = L.discounted_returns(REWARDS, 0.99)
    W, c = policy.actions.weight.detach().double().numpy(), policy.actions.bias.detach().double().numpy()
    loss = L.reinforce_loss(policy(states), actions, returns)
    loss.backward()
    gw, gc = np.zeros_like(W), np.zeros_like(c)
    value = 0.0
    for t in range(3):
        s = states[t].double().numpy()
        p = softmax(W @ s + c)
        a, G = int(actions[t]), float(returns[t])
        value += -G * math.log(p[a]) / 3
        d = (p - np.eye(2)[a]) * G / 3  # ∂(−G log p_a)/∂logits = G (p − e_a)
        gw += np.outer(d, s)
        gc += d
    assert float(loss.detach()) == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(policy.actions.weight.grad.double().numpy(), gw, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(policy.actions.bias.grad.double().numpy(), gc, rtol=1e-5, atol=1e-8)
    lr = 0.1
    before = policy.actions.weight.detach().clone()
    torch.optim.SGD(policy.actions.parameters(), lr=lr).step()
    np.testing.assert_allclose(
        policy.actions.weight.detach().double().numpy(), before.double().numpy() - lr * gw, rtol=1e-5
    )


def test_curriculum_options_are_checked() -> None:
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        CurriculumOptions(episodes=0)
    with pytest.raises(ValueError, match="step_every_batch needs detach_state"):
        CurriculumOptions(step_every_batch=True)
    with pytest.raises(ValueError, match="reward must be"):
        CurriculumOptions(reward="dense")
