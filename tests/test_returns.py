"""CodeRL's rewards, returns and losses, and the GRPO / RLOO advantages, against hand computations."""

import math

import pytest
import torch

from coderl_ray.models.critic import critic_loss, program_logits
from coderl_ray.records import Outcome, critic_class, reward
from coderl_ray.rl.returns import (
    add_relative_returns,
    clipped_rl_loss,
    group_advantages,
    group_shape,
    rl_loss,
    row_advantage,
    sequence_returns,
    token_returns,
)


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


# One problem's group: the greedy program failed (-0.3); four samples passed (1.0), failed (-0.3), hit a runtime error
# (-0.6) and a compile error (-1.0); a fifth broke the sandbox (not a label: dropped). Rewards r = [1, -0.3, -0.6, -1].
GROUP = [
    {"sample_id": "g", "is_greedy": True, "outcome": "failed"},
    {"sample_id": "a", "is_greedy": False, "outcome": "passed"},
    {"sample_id": "b", "is_greedy": False, "outcome": "failed"},
    {"sample_id": "c", "is_greedy": False, "outcome": "runtime_error"},
    {"sample_id": "d", "is_greedy": False, "outcome": "compile_error"},
    {"sample_id": "e", "is_greedy": False, "outcome": "infra_error"},
]


def _advantages(algorithm, rows=GROUP):
    return {r["sample_id"]: r["advantage"] for r in group_advantages(rows, algorithm)}


def test_coderl_advantage_is_the_relative_return_and_the_greedy_row_is_not_trained_on():
    adv = _advantages("coderl")
    assert adv.keys() == {"g", "a", "b", "c", "d"}  # the infrastructure failure is dropped
    assert adv["g"] is None
    # r - r(greedy) = r + 0.3
    assert adv["a"] == pytest.approx(1.3) and adv["b"] == pytest.approx(0.0)
    assert adv["c"] == pytest.approx(-0.3) and adv["d"] == pytest.approx(-0.7)


def test_rloo_subtracts_the_mean_of_the_other_samples():
    adv = _advantages("rloo")
    assert adv["g"] is None  # RLOO ignores the greedy program (the rollout draws no greedy for it)
    # sum(r) = 1 - 0.3 - 0.6 - 1 = -0.9; baseline of i = (sum - r_i) / 3
    assert adv["a"] == pytest.approx(1.0 - (-1.9) / 3)  # 1.6333
    assert adv["b"] == pytest.approx(-0.3 - (-0.6) / 3)  # -0.1
    assert adv["c"] == pytest.approx(-0.6 - (-0.3) / 3)  # -0.5
    assert adv["d"] == pytest.approx(-1.0 - 0.1 / 3)  # -1.0333
    # Equivalently G / (G - 1) * (r_i - mean): the advantages sum to zero.
    assert sum(v for v in adv.values() if v is not None) == pytest.approx(0.0)


def test_grpo_normalises_within_the_group_with_the_sample_std():
    adv = _advantages("grpo")
    # mean = -0.9 / 4 = -0.225; deviations 1.225, -0.075, -0.375, -0.775;
    # squares 1.500625 + 0.005625 + 0.140625 + 0.600625 = 2.2475; std = sqrt(2.2475 / 3) = 0.865544
    std = math.sqrt(2.2475 / 3)
    for sid, dev in zip("abcd", (1.225, -0.075, -0.375, -0.775)):
        assert adv[sid] == pytest.approx(dev / (std + 1e-6))
    assert adv["g"] is None


def test_equal_rewards_give_zero_advantages_and_a_lone_sample_none():
    same = [{"sample_id": s, "is_greedy": False, "outcome": "failed"} for s in "abc"]
    assert set(_advantages("grpo", same).values()) == {0.0}  # (r - mean) = 0; no division by a zero std
    assert set(_advantages("rloo", same).values()) == {0.0}
    lone = [{"sample_id": "a", "is_greedy": False, "outcome": "passed"}]
    assert _advantages("grpo", lone) == {"a": None} and _advantages("rloo", lone) == {"a": None}
    assert _advantages("coderl", lone) == {"a": None}  # no greedy program: no baseline


def test_an_unknown_algorithm_is_an_error_that_names_the_choices():
    with pytest.raises(ValueError, match="unknown RL algorithm 'ppo'; expected one of coderl, grpo, rloo"):
        group_advantages(GROUP, "ppo")


def test_group_shape_spends_the_greedy_budget_on_one_more_sample():
    assert group_shape("coderl", 8) == (8, True)  # 8 samples + the greedy baseline = 9 programs
    assert group_shape("grpo", 8) == group_shape("rloo", 8) == (9, False)  # 9 samples = 9 programs


def test_row_advantage_reads_the_advantage_or_codeRL_relative_return():
    assert row_advantage({"advantage": -0.5, "relative_return": 1.3}) == -0.5
    assert row_advantage({"relative_return": 1.3}) == 1.3  # rows written before advantages existed
    with pytest.raises(ValueError, match="'s1' of problem 'p1' has no advantage"):
        row_advantage({"sample_id": "s1", "problem_id": "p1", "advantage": None})


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
