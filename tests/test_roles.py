"""Persistent roles: weights published by version reach generators exactly, a killed role's call is sent again, the
persistent trainer trains exactly what a stage's own fit() trained, and part folders resume exactly once."""

from __future__ import annotations

import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.helpers import tiny_actor_dir, tiny_suite


def _program_rows(actor_dir, n: int = 4) -> pa.Table:
    """A fixed batch: the prompts of ``n`` suite problems, each with a program of random token ids."""
    from coderl_ray.data.prompts import build_prompt
    from coderl_ray.models.batching import encode_prompt
    from coderl_ray.models.tokenizer import load_tokenizer

    tok = load_tokenizer(actor_dir)
    train, _ = tiny_suite()
    rng = np.random.default_rng(0)
    rows = [{"prompt_ids": encode_prompt(tok, build_prompt(p), 128),
             "token_ids": rng.integers(5, 300, size=10 + i).tolist()} for i, p in enumerate(train[:n])]
    return pa.Table.from_pylist(rows)


def _logprobs(model, table: pa.Table) -> list[np.ndarray]:
    from coderl_ray.models.batching import program_batch, token_logprobs

    rows = table.to_pylist()
    with torch.no_grad():
        batch = program_batch(rows, 0, "cpu")
        logp = token_logprobs(model.eval(), batch).numpy()
    return [logp[i, : len(r["token_ids"])] for i, r in enumerate(rows)]


def _one_sgd_step(model, table: pa.Table) -> None:
    from coderl_ray.train.objectives import sft_loss

    model.train()
    loss, _ = sft_loss(model, table.to_pylist(), 0)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    model.zero_grad()


def test_a_published_version_reaches_a_generator_exactly_and_a_restarted_one_catches_up(ray_cluster, tmp_path):
    import ray

    from coderl_ray.models.actor import load_actor
    from coderl_ray.roles.pool import Hop, Item, RolePool, Stream
    from coderl_ray.roles.weights import cpu_state_dict, publish_state, start_weight_store
    from coderl_ray.roles.workers import GeneratorRole, ModelRef

    actor = tiny_actor_dir(tmp_path)
    table = _program_rows(actor)
    store = start_weight_store(keep=2)
    pool = RolePool("generator", GeneratorRole, (store, 0), 1, {"num_cpus": 0.1})
    v0 = ModelRef("actor", str(actor), 0, 0)
    before = pool.broadcast("logprobs", table, v0)[0].to_pylist()

    trained = load_actor(actor)
    _one_sgd_step(trained, table)  # the "trainer": new weights, published as version 1
    publish_state(store, "actor", 1, cpu_state_dict(trained))
    after = pool.broadcast("logprobs", table, v0.at(1))[0].to_pylist()
    expected = _logprobs(trained, table)
    for got, want, old in zip(after, expected, before):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # the trainer's own numbers
        assert np.abs(np.asarray(got) - np.asarray(old)).max() > 1e-3  # and not the old weights'

    # Kill the generator's process: Ray constructs it again from its first folder (version 0); the call it was
    # serving is sent again and, asking for version 1, gets the published weights.
    pid = pool.processes()[0]["pid"]
    got: list = []
    stream = Stream([Hop(pool, "logprobs", lambda item: (v0.at(1),))], lambda item, out: got.append(out))
    stream.add(Item(0, table))
    os.kill(pid, signal.SIGKILL)
    while stream.busy:
        stream.poll(timeout=5.0)
    for g, want in zip(got[0].to_pylist(), expected):
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-5)
    procs = pool.processes()
    assert procs[0]["pid"] != pid and procs[0]["restarted"] and pool.stats.restarts == 1
    assert pool.stats.retries <= 1  # 1 when the call was in flight when the process died

    # A version the store does not hold (never published, or no longer kept) is an error that says what it holds,
    # not a silent fallback to other weights.
    for v in (2, 3):
        publish_state(store, "actor", v, cpu_state_dict(trained))
    with pytest.raises(ray.exceptions.RayTaskError, match=r"version 4 are not in the weight store .*\[2, 3\]"):
        pool.broadcast("logprobs", table, v0.at(4))
    pool.shutdown()


def test_the_persistent_trainer_trains_what_a_stage_fit_trained_and_publishes_it(ray_cluster, tmp_path):
    """SFT on the persistent trainer (one fit() serving commands) and on a stage's own fit() of the old path:
    the same rows, batches and seeds give the same weights; the published version equals the saved folder."""
    from dataclasses import asdict

    from coderl_ray.config import TrainConfig
    from coderl_ray.data.parquet import read_parquet
    from coderl_ray.models.actor import load_actor
    from coderl_ray.pipeline import PipelineConfig
    from coderl_ray.rl.replay_buffer import ground_truth_rows
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.roles.pool import RolePool
    from coderl_ray.roles.setup import Roles
    from coderl_ray.roles.workers import GeneratorRole, ModelRef
    from coderl_ray.train.loop import LoopConfig, fit, load_trained

    actor = tiny_actor_dir(tmp_path)
    train, _ = tiny_suite()
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(ground_truth_rows(train, load_tokenizer(actor), 128, 64)),
                   gt_dir / "part-0.parquet")
    loop = LoopConfig(objective="sft", init_path=str(actor), steps=3, batch_size=8, lr=1e-3, seed=3,
                      report_every=10, log_dir="", progress_bar=False, name="sft")

    old = load_trained(fit(loop, {"train": read_parquet(str(gt_dir))}, storage_path=tmp_path / "st",
                           name="sft_fit", cpus_per_worker=0.1), tmp_path / "old")

    cfg = PipelineConfig(train=TrainConfig(cpus_per_worker=0.1))
    with Roles(cfg, tmp_path / "st2") as roles:
        roles.ensure_slot("actor", "actor", loop, actor)
        roles.trainer("actor").run({"op": "train", "slot": "actor", "loop": asdict(loop),
                                    "data": {"train": read_parquet(str(gt_dir))}, "save": str(tmp_path / "new"),
                                    "publish": {"name": "actor", "version": 1}})
        table = _program_rows(actor)
        pool = RolePool("generator", GeneratorRole, (roles.store, 0), 1, {"num_cpus": 0.1})
        published = pool.broadcast("logprobs", table, ModelRef("actor", str(actor), 0, 1))[0].to_pylist()
        pool.shutdown()

    a, b = load_actor(tmp_path / "old").state_dict(), load_actor(tmp_path / "new").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(a["shared.weight"], load_actor(actor).state_dict()["shared.weight"])  # it did train
    for got, want in zip(published, _logprobs(load_actor(tmp_path / "new"), table)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_a_part_folder_resumes_its_finished_parts_and_starts_over_when_the_plan_changes(tmp_path):
    from coderl_ray.data.parts import PartFolder

    dest = tmp_path / "round_0001"
    first = PartFolder(dest, {"items": [["a"], ["b"]]})
    first.write(0, pa.table({"x": [1]}))
    (first.tmp / "part-00001.parquet.partial").write_text("a write cut short")  # never counts as a part
    again = PartFolder(dest, {"items": [["a"], ["b"]]})
    assert again.done_keys() == [0] and again.has(0) and not again.has(1)
    again.write(1, pa.table({"x": [2]}))
    assert again.finish() == dest and not again.tmp.exists()
    assert sorted(pq.read_table(dest).column("x").to_pylist()) == [1, 2]

    other = PartFolder(tmp_path / "round_0002", {"items": [["a"]]})
    other.write(0, pa.table({"x": [1]}))
    changed = PartFolder(tmp_path / "round_0002", {"items": [["c"]]})  # other problems: nothing is reused
    assert changed.done_keys() == []


def test_the_generator_role_samples_what_the_ray_data_rollout_sampled(ray_cluster, tmp_path):
    """The staged loop's rollout moved from a Ray Data actor pool to the persistent generators: the same problems,
    seed and round give the same programs, token for token (keyed sampling), plus behaviour log-probabilities that
    are the RL step's log p of those tokens at the sampling temperature."""
    from coderl_ray.config import RolloutConfig
    from coderl_ray.models.actor import load_actor
    from coderl_ray.roles.pool import RolePool
    from coderl_ray.roles.weights import start_weight_store
    from coderl_ray.roles.workers import GeneratorRole, ModelRef
    from coderl_ray.rollout.stage import generate_samples, prompt_rows, sampling_params

    actor = tiny_actor_dir(tmp_path)
    problems = tiny_suite()[0][:6]
    cfg = RolloutConfig(num_samples=2, max_new_tokens=16, batch_size_per_worker=3, cpus_per_worker=0.1)
    params = sampling_params(cfg, 128)
    old = generate_samples(problems, str(actor), cfg, params, round_=2, policy_version=1, seed=5).take_all()
    pool = RolePool("generator", GeneratorRole, (start_weight_store(), 0), 1, {"num_cpus": 0.1})
    new = pool.broadcast("generate", pa.Table.from_pylist(prompt_rows(problems)),
                         ModelRef.of_folder("actor", actor), params, 2, 5, 0.6, 1)[0].to_pylist()
    pool.shutdown()
    key = ("sample_id", "token_ids", "code", "policy_version", "is_greedy", "prompt_ids")
    assert sorted((tuple(r[k] for k in key) for r in old)) == sorted((tuple(r[k] for k in key) for r in new))
    sampled = [r for r in new if not r["is_greedy"]]
    want = _logprobs_at(load_actor(actor), pa.Table.from_pylist(sampled), 0.6)
    for r, w in zip(sampled, want):
        np.testing.assert_allclose(r["old_logprobs"], w, rtol=0, atol=1e-5)
    assert all(r["old_logprobs"] == [] for r in new if r["is_greedy"])


def _logprobs_at(model, table: pa.Table, temperature: float) -> list[np.ndarray]:
    from coderl_ray.models.batching import program_batch, token_logprobs

    rows = table.to_pylist()
    with torch.no_grad():
        logp = token_logprobs(model.eval(), program_batch(rows, 0, "cpu"), temperature).numpy()
    return [logp[i, : len(r["token_ids"])] for i, r in enumerate(rows)]


def test_a_role_reserving_a_fraction_of_a_cpu_computes_on_one_torch_thread(ray_cluster):
    """Why configs/tiny.yaml runs two generators and two scorers (docs/benchmarks.md, "make demo with two
    generators"): Ray gives an actor as many torch threads as the CPUs it reserves, and one for a fraction."""
    import ray

    @ray.remote
    class Threads:
        def threads(self) -> tuple[str | None, int]:
            import os

            import torch

            return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()

    for cpus in (0.125, 1):
        actor = Threads.options(num_cpus=cpus).remote()
        try:
            assert ray.get(actor.threads.remote()) == ("1", 1)
        finally:
            ray.kill(actor)
