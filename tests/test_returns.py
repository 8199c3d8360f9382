"""CodeRL's rewards, returns and losses against hand computations."""

import math

import pytest
import torch

from coderl_ray.models.critic import critic_loss, program_logits
from coderl_ray.records import Outcome, critic_class, reward
from coderl_ray.rl.returns import add_relative_returns, clipped_rl_loss, rl_loss, sequence_returns, token_returns


def test_reward_table_and_apps_codes():
    assert [reward(o) for o in ("compile_error", "runtime_error", "timeout", "failed", "passed")] == \
        [-1.0, -0.6, -0.6, -0.3, 1.0]
    assert [Outcome(o).apps_result for o in ("passed", "failed", "runtime_error", "timeout", "compile_error",
                                             "infra_error")] == [True, False, -1, -1, -2, None]
    with pytest.raises(ValueError, match="infrastructure"):
        critic_class("infra_error")
    assert critic_class("failed", 2) == 0 and critic_class("passed", 2) == 1


def test_relative_returns_subtract_the_greedy_baseline_and_drop_infra_errors():
    rows = [
        {"sample_id": "g", "is_greedy": True, "outcome": "runtime_error"},  # baseline reward -0.6
        {"sample_id": "a", "is_greedy": False, "outcome": "passed"},  # 1.0 - (-0.6) = 1.6
        {"sample_id": "b", "is_greedy": False, "outcome": "compile_error"},  # -1.0 - (-0.6) = -0.4
        {"sample_id": "c", "is_greedy": False, "outcome": "infra_error"},  # never a label
    ]
    out = {r["sample_id"]: r["relative_return"] for r in add_relative_returns(rows)}
    assert out.keys() == {"g", "a", "b"}
    assert out["g"] == 0.0 and math.isclose(out["a"], 1.6) and math.isclose(out["b"], -0.4)


def test_missing_baseline_leaves_returns_empty():
    rows = add_relative_returns([{"is_greedy": False, "outcome": "passed"}])
    assert rows[0]["relative_return"] is None and rows[0]["reward"] == 1.0


def test_token_returns_weight_by_critic_probability_of_the_actual_outcome():
    # One program, 2 tokens, 4 classes. Token 0: uniform logits -> p(class 2) = 0.25.
    # Token 1: logits [0, 0, ln 3, 0] -> p(class 2) = 3 / (1 + 1 + 3 + 1) = 0.5. Third position is padding.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, math.log(3.0), 0.0], [9.0, 9.0, 9.0, 9.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    q = token_returns(logits, torch.tensor([2]), torch.tensor([-0.4]), mask)
    assert torch.allclose(q, torch.tensor([[0.25 * -0.4, 0.5 * -0.4, 0.0]]))
    assert torch.allclose(sequence_returns(torch.tensor([2.0]), mask), torch.tensor([[2.0, 2.0, 0.0]]))


def test_rl_loss_is_the_masked_mean_over_tokens_then_over_programs():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    q = torch.tensor([[1.0, 0.5, 0.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # program 0: (1*-1 + 0.5*-2) / 2 = -1.0; program 1: (-2*-0.5) / 1 = 1.0; loss = -mean(-1.0, 1.0) = 0.0
    assert rl_loss(logp, q, mask).item() == pytest.approx(0.0)
    # Only program 0: loss = 1.0; its gradient raises the log-probs of a positively rewarded program.
    logp0 = logp[:1].clone().requires_grad_(True)
    loss = rl_loss(logp0, q[:1], mask[:1])
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert torch.allclose(logp0.grad, torch.tensor([[-0.5, -0.25, 0.0]]))


def test_clipped_loss_has_the_plain_gradient_on_policy():
    """At the policy that sampled (old = current) the trust region changes nothing: same value, same gradient."""
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    q = torch.tensor([[1.0, 0.5, 0.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    a, b = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    plain, clipped = rl_loss(a, q, mask), clipped_rl_loss(b, logp.clone(), q, mask, clip=0.2)
    plain.backward()
    clipped.backward()
    # The values differ by a constant (the surrogate is rho * q, not q log p); the gradients are the same.
    assert clipped.item() == pytest.approx(-(1.0 * 1.5 / 2 + -2.0) / 2)
    assert torch.allclose(a.grad, b.grad)


def test_clipped_loss_stops_pushing_a_token_once_it_left_the_trust_region():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    mask = torch.ones(1, 2)
    q = torch.tensor([[-1.0, 1.0]])  # token 0 is blamed (push down), token 1 credited (push up)
    # Token 0 already fell to 0.3 (ratio 0.6 < 0.8): no more gradient; token 1 rose only to 0.55 (ratio 1.1): still
    # pulled up, with d(-rho q / 2)/d log p = -rho q / 2 = -0.55.
    logp = torch.log(torch.tensor([[0.3, 0.55]])).requires_grad_(True)
    clipped_rl_loss(logp, old, q, mask, clip=0.2).backward()
    assert logp.grad[0, 0].item() == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-0.55)
    # The other way round, a move that goes against the return is never clipped: the gradient pulls it back.
    logp = torch.log(torch.tensor([[0.9, 0.1]])).requires_grad_(True)
    clipped_rl_loss(logp, old, q, mask, clip=0.2).backward()
    assert logp.grad[0, 0].item() == pytest.approx(0.9)  # -(-1) * 1.8 / 2
    assert logp.grad[0, 1].item() == pytest.approx(-0.1)  # -(1) * 0.2 / 2


def test_critic_max_pools_valid_tokens_only():
    token_logits = torch.tensor([[[1.0, 0.0], [3.0, -1.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(program_logits(token_logits, mask), torch.tensor([[3.0, 0.0]]))
    # CE of logits [3, 0] against class 0: -log(e^3 / (e^3 + 1))
    expected = -math.log(math.exp(3) / (math.exp(3) + 1))
    assert critic_loss(token_logits, mask, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
