"""Sampling with top-k as the original's generate() did (the library default of 50), in both decoders."""

import pytest
import torch

from coderl_ray.config import load_config
from coderl_ray.models.decoding import sample_tokens, top_k_filter
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams
from coderl_ray.rollout.stage import sampling_params
from tests.helpers import tiny_actor_dir, tiny_suite


def test_top_k_filter_matches_transformers_warper():
    from transformers.generation.logits_process import TopKLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(5, 300)
    logits[0, :4] = 3.0  # ties at the k-th value are kept, as in transformers
    for k in (1, 3, 50):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits.clone()))
    assert torch.equal(top_k_filter(logits, 0), logits)
    kept = top_k_filter(logits, 50).isfinite().sum(-1)
    assert kept[1:].tolist() == [50] * 4


def test_sample_tokens_never_leaves_the_top_k():
    torch.manual_seed(1)
    logits = torch.randn(64, 100)
    draws = torch.stack([sample_tokens(logits, 2.0, 1.0, False, top_k=3) for _ in range(50)], dim=1)
    top3 = logits.topk(3, dim=-1).indices
    assert all(set(row.tolist()) <= set(t.tolist()) for row, t in zip(draws, top3))
    assert len({x for row in draws for x in row.tolist()}) > 3  # and it does sample (different rows, different sets)


@pytest.mark.parametrize("decoder", ["hf", "static"])
def test_top_k_one_samples_the_greedy_program_in_both_decoders(tmp_path, decoder):
    gen = ProgramGenerator(tiny_actor_dir(tmp_path), device="cpu", seed=0)
    samples = gen.generate(tiny_suite()[0][:3], SamplingParams(num_samples=2, temperature=1.5, top_p=1.0, top_k=1,
                                                               max_new_tokens=8, decoder=decoder))
    greedy = {s["problem_id"]: s["token_ids"] for s in samples if s["is_greedy"]}
    assert all(s["token_ids"] == greedy[s["problem_id"]] for s in samples)
    # Without top-k, temperature 1.5 draws other programs.
    free = gen.generate(tiny_suite()[0][:3], SamplingParams(num_samples=2, temperature=1.5, top_p=1.0, top_k=0,
                                                            max_new_tokens=8, decoder=decoder))
    assert any(s["token_ids"] != greedy[s["problem_id"]] for s in free)


def test_rollout_top_k_defaults_to_the_originals_50_and_reaches_the_sampler():
    cfg = load_config(None)
    assert cfg.rollout.top_k == 50
    assert sampling_params(cfg.rollout, 600).top_k == 50
    assert sampling_params(load_config(None, ["rollout.top_k=0"]).rollout, 600).top_k == 0
