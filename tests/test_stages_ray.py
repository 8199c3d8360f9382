"""The Ray wrappers of each stage on a real local Ray cluster: rollout pool, replay buffer, critic scoring, Ray Train."""

import pyarrow.parquet as pq
import pytest

from coderl_ray.config import RolloutConfig, SandboxConfig
from coderl_ray.execution import execute_samples
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.records import reward
from coderl_ray.rl.replay_buffer import ground_truth_rows, read_rounds, write_round
from coderl_ray.rollout.stage import generate_samples, sampling_params
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    return tiny_actor_dir(tmp_path_factory.mktemp("actor"))


def test_rollout_execute_and_buffer_round(ray_cluster, actor, tmp_path):
    problems = tiny_suite()[0][:6]
    cfg = RolloutConfig(num_samples=3, max_new_tokens=16, batch_size_per_worker=4)
    params = sampling_params(cfg, max_source_tokens=256)
    samples = generate_samples(problems, str(actor), cfg, params, round_=2, policy_version=1)
    # Reference programs stand in for a trained actor's output for half of the samples, so outcomes differ.
    solutions = {p["problem_id"]: p["solutions"][0] for p in problems}
    samples = samples.map(lambda r: {**r, "code": solutions[r["problem_id"]] if r["sample_id"].endswith("s0")
                                     else r["code"]})
    results = execute_samples(samples, problems, SandboxConfig(batch_size=4))
    dest = write_round(results, tmp_path / "buffer", 2)
    rows = pq.read_table(dest).to_pylist()
    assert len(rows) == 6 * 4 and len({r["sample_id"] for r in rows}) == 24
    assert all(r["round"] == 2 and r["policy_version"] == 1 and r["token_ids"] and r["prompt_ids"] for r in rows)
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    for pid, group in by_problem.items():
        base = next(r for r in group if r["is_greedy"])
        for r in group:
            assert r["reward"] == reward(r["outcome"])
            assert r["relative_return"] == pytest.approx(r["reward"] - base["reward"])
        assert next(r for r in group if r["sample_id"].endswith("s0"))["outcome"] == "passed"
    assert read_rounds(tmp_path / "buffer", [2]).count() == 24
    with pytest.raises(FileNotFoundError, match="round_0003"):
        read_rounds(tmp_path / "buffer", [3])


def test_critic_training_and_scoring_on_ray(ray_cluster, actor, tmp_path):
    import numpy as np
    import ray

    from coderl_ray.models.critic import load_critic, score_programs
    from coderl_ray.rl.scoring import score_samples
    from coderl_ray.train.loop import LoopConfig, fit, load_trained

    tok = load_tokenizer(actor)
    rows = ground_truth_rows(tiny_suite()[0], tok, 256, 96)
    # Label half of the reference programs as failed, so the critic has two classes to learn.
    data = [{**r, "outcome": "passed" if i % 2 else "failed"} for i, r in enumerate(rows)]
    cfg = LoopConfig(objective="critic", init_path=str(actor), new_critic=True, steps=3, batch_size=8, lr=1e-3,
                     report_every=1, head_hidden=16)
    ckpt = fit(cfg, {"train": ray.data.from_items(data)}, storage_path=tmp_path / "runs", name="critic")
    critic_dir = load_trained(ckpt, tmp_path / "critic")
    assert (critic_dir / "critic_head.safetensors").is_file()
    scored = {r["sample_id"]: r for r in
              score_samples(ray.data.from_items(data[:5]), str(critic_dir), batch_size=2).take_all()}
    # The Ray stage (an actor pool, batches of 2) gives what the trained critic gives run directly, without Ray.
    direct = score_programs(load_critic(critic_dir).eval(), data[:5], tok.pad_token_id)
    assert sorted(scored) == sorted(r["sample_id"] for r in data[:5])
    for row, want in zip(data[:5], direct):
        got = scored[row["sample_id"]]
        assert np.asarray(got["critic_logits"]).reshape(-1, 4) == pytest.approx(want.token_logits, abs=1e-4)
        assert got["critic_pred"] == want.pred
        assert got["critic_pass_prob"] == pytest.approx(want.pass_prob, abs=1e-5)


def test_old_logprobs_on_ray_are_the_actors_tempered_log_probs(ray_cluster, actor):
    """The trust region's reference point, computed by a Ray Data actor pool, matches the pure function."""
    import ray
    import torch

    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.batching import token_logprobs
    from coderl_ray.rl.scoring import add_old_logprobs
    from coderl_ray.models.batching import program_batch

    tok = load_tokenizer(actor)
    rows = ground_truth_rows(tiny_suite()[0][:5], tok, 256, 96)
    got = {r["sample_id"]: r["old_logprobs"] for r in
           add_old_logprobs(ray.data.from_items(rows), str(actor), 0.6, batch_size=2).take_all()}
    with torch.no_grad():
        want = token_logprobs(load_actor(actor).eval(), program_batch(rows, tok.pad_token_id), 0.6)
    for i, r in enumerate(rows):
        n = len(r["token_ids"])
        assert len(got[r["sample_id"]]) == n
        assert torch.allclose(torch.tensor(got[r["sample_id"]]), want[i, :n], atol=1e-4)
