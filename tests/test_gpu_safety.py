"""Code paths that decide where and in what precision models run; what can be checked without a GPU is checked here."""

import pytest
import torch

from coderl_ray.models.device import autocast, choose_device, inference_device, ray_assigned_gpu_ids


# --- device: what Ray assigned, not what the node has --------------------------------------------------------------


def test_a_worker_given_no_gpu_runs_on_cpu_even_when_cuda_is_there():
    # The bug: an actor started with num_gpus=0 on a GPU node saw cuda available and took GPU 0.
    assert choose_device([], cuda_available=True) == torch.device("cpu")
    assert choose_device([], cuda_available=False) == torch.device("cpu")


def test_outside_ray_the_first_gpu_is_used_when_there_is_one():
    assert choose_device(None, cuda_available=True) == torch.device("cuda", 0)
    assert choose_device(None, cuda_available=False) == torch.device("cpu")


def test_an_assigned_gpu_is_the_first_visible_device():
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so physical GPU 3 is cuda:0 in the worker...
    assert choose_device(["3"], cuda_available=True, cuda_visible_devices="3") == torch.device("cuda", 0)
    assert choose_device([1, 2], cuda_available=True, cuda_visible_devices="1,2") == torch.device("cuda", 0)
    # ... unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES left every GPU visible: then the id is the index.
    assert choose_device(["3"], cuda_available=True, cuda_visible_devices=None) == torch.device("cuda", 3)


def test_an_assigned_gpu_without_cuda_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(RuntimeError, match=r"assigned GPU\(s\) \['0'\].*no CUDA"):
        choose_device(["0"], cuda_available=False, cuda_visible_devices="0")


def test_ray_workers_without_a_gpu_get_the_cpu(ray_cluster):
    import ray

    @ray.remote(num_gpus=0, num_cpus=0.1)
    class Probe:
        def where(self):
            return ray_assigned_gpu_ids(), str(inference_device())

    @ray.remote(num_gpus=0, num_cpus=0.1)
    def task():
        return ray_assigned_gpu_ids(), str(inference_device())

    probe = Probe.remote()
    assert ray.get(probe.where.remote()) == ([], "cpu")
    assert ray.get(task.remote()) == ([], "cpu")
    ray.kill(probe)
    assert ray_assigned_gpu_ids() is None  # the driver is not a worker: nothing was assigned to it


def test_autocast_is_the_training_rule():
    # CPU always computes in fp32 (the config refuses bf16 without a GPU); bf16 autocasts on GPU only.
    x = torch.randn(2, 3)
    with autocast("cpu", "bf16"):
        assert (x @ x.T).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp16")


# --- checkpoints stored in bf16: train in fp32, score and generate in one dtype -----------------------------------


@pytest.fixture(scope="module", params=["codet5", "gpt2"])
def bf16_dirs(request, tmp_path_factory, shared_data):
    """A tiny actor saved in bf16 (as Qwen2.5-Coder is on the Hub), and a critic on it saved in bf16."""
    from coderl_ray.models.actor import load_actor
    from coderl_ray.models.critic import build_critic
    from coderl_ray.models.tokenizer import load_tokenizer
    from tests.tiny_models import codet5_dir, gpt2_dir

    tmp = tmp_path_factory.mktemp(f"bf16-{request.param}")
    src = (codet5_dir if request.param == "codet5" else gpt2_dir)(tmp, shared_data)
    tok = load_tokenizer(src)
    actor = tmp / "actor-bf16"
    load_actor(src).to(torch.bfloat16).save_pretrained(actor)
    tok.save_pretrained(actor)
    critic = tmp / "critic-bf16"
    build_critic(src, n_classes=4, head_hidden=8).to(torch.bfloat16).save_pretrained(critic)
    tok.save_pretrained(critic)
    return actor, critic


def _rows(tok, n=4):
    from coderl_ray.rl.replay_buffer import ground_truth_rows
    from tests.helpers import tiny_suite

    return ground_truth_rows(tiny_suite()[0][:n], tok, 64, 24)


def test_bf16_checkpoints_are_stored_in_bf16(bf16_dirs):
    # The premise: transformers 5 loads the stored dtype ("auto"); our loaders must not inherit it.
    from transformers import AutoConfig

    actor, critic = bf16_dirs
    assert AutoConfig.from_pretrained(actor).dtype == torch.bfloat16
    assert AutoConfig.from_pretrained(critic).dtype == torch.bfloat16


@pytest.mark.parametrize("objective", ["sft", "critic-new", "critic"])
def test_training_from_a_bf16_checkpoint_keeps_fp32_master_weights(bf16_dirs, objective):
    """Every parameter is fp32 after loading for training, and a step at an RL-sized learning rate moves every one
    of them: in bf16, a weight of ~0.02 has a resolution of ~1e-4, and AdamW's first update (lr x ~1) of 1e-6
    would round away."""
    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.train.loop import LoopConfig, build_model, run_loop

    actor, critic = bf16_dirs
    init = critic if objective == "critic" else actor
    cfg = LoopConfig(objective="critic" if objective.startswith("critic") else "sft", init_path=str(init),
                     new_critic=objective == "critic-new", steps=1, batch_size=4, lr=1e-6, warmup_ratio=0.0,
                     head_hidden=8, grad_clip=0.0)
    model = build_model(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    tok = load_tokenizer(init)
    rows = [{**r, "outcome": "passed" if i % 2 else "failed"} for i, r in enumerate(_rows(tok))]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    hist = run_loop(cfg, model, iter([rows]), tok.pad_token_id)
    assert torch.isfinite(torch.tensor(hist[0]["loss"]))
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    # Parameters without a gradient in this objective (a critic never uses the LM head's bias, T5's decoder-side
    # relative bias is still learned) are the only ones allowed to stay.
    with_grad = {n for n, p in model.named_parameters() if n in before and p.grad is not None}
    assert with_grad and moved == with_grad


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_bf16_critic_scores_in_one_dtype(bf16_dirs, dtype):
    """The crash: a bf16 backbone under an fp32 head ("mat1 and mat2 must have the same dtype")."""
    from coderl_ray.models.critic import load_critic, score_programs
    from coderl_ray.models.tokenizer import load_tokenizer

    _, critic_dir = bf16_dirs
    critic = load_critic(critic_dir, dtype=dtype).eval()
    want = dtype or torch.float32
    assert critic.backbone.dtype == want and {p.dtype for p in critic.head.parameters()} == {want}
    tok = load_tokenizer(critic_dir)
    scores = score_programs(critic, _rows(tok, 3), tok.pad_token_id)
    assert [s.token_logits.shape for s in scores] == [(len(r["token_ids"]), 4) for r in _rows(tok, 3)]


def test_a_bf16_actor_samples_on_cpu_in_fp32(bf16_dirs):
    from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams
    from tests.helpers import tiny_suite

    actor, _ = bf16_dirs
    gen = ProgramGenerator(actor, device="cpu")
    assert gen.model.dtype == torch.float32
    samples = gen.generate(tiny_suite()[0][:2], SamplingParams(num_samples=2, max_new_tokens=6,
                                                               max_source_tokens=64))
    assert len(samples) == 6


# --- full decoder batches ---------------------------------------------------------------------------------------


class BatchSizes:
    """A ``map_batches`` callable like the generator pool's, recording the size of each call it gets."""

    def __call__(self, batch):
        import pyarrow as pa

        return pa.table({"rows": [batch.num_rows]})


def _call_sizes(ds, batch_size, workers):
    import ray

    out = ds.map_batches(BatchSizes, batch_size=batch_size, batch_format="pyarrow",
                         compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.5)
    return sorted((r["rows"] for r in out.take_all()), reverse=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_generator_pool_gets_full_batches(ray_cluster, workers):
    """500 prompts in batches of 16: 31 full calls and one of 500 - 31 x 16 = 4. The old layout (from_items) cut
    batches inside Ray's own blocks: more calls, many of them small (46 calls, 16 of 2 prompts, in the issue)."""
    import ray

    from coderl_ray.rollout.stage import prompt_dataset, prompt_rows
    from tests.helpers import tiny_suite

    problems = tiny_suite(n_train=500, n_test=1)[0]
    assert len(problems) == 500
    assert _call_sizes(prompt_dataset(problems, 16), 16, workers) == [16] * 31 + [4]
    old = _call_sizes(ray.data.from_items(prompt_rows(problems)), 16, workers)
    assert sum(old) == 500 and len(old) > 32 and sum(n < 16 for n in old) > 1


# --- the trust region's reference: computed as the RL step computes -----------------------------------------------


def test_old_logprobs_are_what_the_first_rl_step_computes(tmp_path):
    """Before its first update the RL step must see ratio p / p_old = 1 on every token, i.e. logprob_shift = 0:
    old log-probabilities in the run's precision (bf16 asked for; on CPU both sides run fp32 by the same rule),
    at the sampling temperature, from the same fp32 weights. Without a dropout-free model this could not hold
    (the tiny actor has no dropout; CodeT5's 0.1 would add noise to every training-mode forward)."""
    import pyarrow as pa

    from coderl_ray.models.tokenizer import load_tokenizer
    from coderl_ray.rl.scoring import OldLogprobBatch
    from coderl_ray.train.loop import LoopConfig, build_model, run_loop
    from tests.helpers import tiny_actor_dir

    actor = tiny_actor_dir(tmp_path, "seq2seq")
    tok = load_tokenizer(actor)
    rows = [{**r, "outcome": "failed", "relative_return": -0.3 if i % 2 else 1.3, "is_greedy": False}
            for i, r in enumerate(_rows(tok, 4))]
    scored = OldLogprobBatch(str(actor), 0.6, precision="bf16")(pa.Table.from_pylist(rows)).to_pylist()
    assert [len(r["old_logprobs"]) for r in scored] == [len(r["token_ids"]) for r in rows]
    cfg = LoopConfig(objective="rl", init_path=str(actor), steps=1, batch_size=4, lr=1e-3, alternate_ce=False,
                     use_critic=False, rl_temperature=0.6, rl_clip=0.2, precision="bf16", warmup_ratio=0.0)
    hist = run_loop(cfg, build_model(cfg), iter([scored]), tok.pad_token_id)
    assert hist[0]["logprob_shift"] < 1e-6
    with pytest.raises(ValueError, match="precision"):
        OldLogprobBatch(str(actor), 0.6, precision="fp16")


# --- FSDP with gradient accumulation keeps gradients sharded ------------------------------------------------------


def test_fsdp_accumulation_keeps_gradients_sharded_and_exact():
    """With several micro-batches per step, FSDP reduce-scatters each one: after the first micro-batch's backward
    every parameter holds its sharded gradient and no block keeps a full unsharded one (what skipping the
    reduction would hold: 4 B per parameter of the whole model). The accumulated gradient is the plain model's."""
    import copy

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from coderl_ray.train.parallel import is_fsdp, no_sync

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ref = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        model = copy.deepcopy(ref)
        for block in (model[0], model[2]):
            fully_shard(block)
        fully_shard(model)
        assert is_fsdp(model)
        micro = [torch.randn(4, 8), torch.randn(3, 8)]
        with no_sync(model, enabled=True):  # what train_step asks for on every micro-batch but the last
            model(micro[0]).sum().backward()
        assert all(p.grad is not None for p in model.parameters())  # reduce-scattered into the shards
        held = [fp for m in model.modules() if hasattr(m, "_get_fsdp_state")
                for group in [m._get_fsdp_state()._fsdp_param_group] if group is not None
                for fp in group.fsdp_params if fp._unsharded_param.grad is not None]
        assert held == []
        with no_sync(model, enabled=False):
            model(micro[1]).sum().backward()
        for x in micro:
            ref(x).sum().backward()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.allclose(p.grad.full_tensor(), q.grad, atol=1e-6)
    finally:
        dist.destroy_process_group()
