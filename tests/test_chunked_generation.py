"""Generation in chunks of bounded rows, with keyed sampling: the same programs whatever the chunking, batching or
decoder, and never more rows in one decoder call than the budget."""

import itertools

import pytest
import torch

from coderl_ray.models.decoding import race_noise, sample_tokens
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams, plan_chunks, sample_key
from tests.helpers import tiny_actor_dir, tiny_suite


def test_keyed_race_samples_each_token_at_its_probability():
    """20,000 rows with distinct keys drawing once from p = [0.1, 0.2, 0.3, 0.4, 0]: each frequency is within 4
    standard deviations of p (sd = sqrt(p (1 - p) / n) <= sqrt(0.25 / 20000) = 0.0035, so 0.014); one row over
    4,000 steps likewise (0.032)."""
    p = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    n = 20_000
    logits = torch.log(p).expand(n, -1)
    by_row = sample_tokens(logits, 1.0, 1.0, False, row_keys=torch.arange(n, dtype=torch.int64) * 7919, step=3)
    assert (torch.bincount(by_row, minlength=5) / n - p).abs().max() < 4 * (0.25 / n) ** 0.5
    key = torch.tensor([sample_key(0, 1, "apps/0001", 0)])
    steps = 4000
    by_step = torch.cat([sample_tokens(logits[:1], 1.0, 1.0, False, row_keys=key, step=t) for t in range(steps)])
    assert (torch.bincount(by_step, minlength=5) / steps - p).abs().max() < 4 * (0.25 / steps) ** 0.5
    assert int((by_row == 4).sum()) == 0  # a token of probability 0 is never drawn


def test_race_noise_is_a_function_of_key_step_and_token_only():
    keys = torch.tensor([5, 2**62 + 11, 5])
    a = race_noise(keys, 7, 50)
    assert torch.equal(a[0], a[2])  # same key, same step: same variates, whatever the row's position
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], race_noise(keys, 8, 50)[0])
    assert torch.equal(race_noise(keys[1:2], 7, 50)[0], a[1])  # alone or in a batch: the same
    assert bool((a > 0).all()) and bool(torch.isfinite(a).all())


@pytest.mark.parametrize("prompts,samples,max_rows", list(itertools.product([1, 3, 16], [1, 2, 5, 20, 200],
                                                                               [0, 1, 3, 64, 100, 512])))
def test_chunks_cover_every_row_once_within_the_budget(prompts, samples, max_rows):
    chunks = plan_chunks(prompts, samples, max_rows)
    rows = [(c.first_prompt + i, c.first_sample + k) for c in chunks for i in range(c.prompts)
            for k in range(c.samples)]
    assert rows == [(i, k) for i in range(prompts) for k in range(samples)]  # prompt-major order, no gaps
    if max_rows:
        assert max(c.rows for c in chunks) <= max_rows
    else:
        assert len(chunks) == 1
    assert len({(c.prompts, c.samples) for c in chunks}) <= 2  # balanced: at most two shapes per batch


def test_paper_scale_evaluation_batch_is_split():
    # configs/codet5-large.yaml's evaluation: 16 prompts x 200 samples = 3,200 rows in one call before chunking.
    chunks = plan_chunks(16, 200, 256)
    assert [c.rows for c in chunks] == [200] * 16
    assert [c.rows for c in plan_chunks(16, 20, 512)] == [320]  # the rollout batch fits in one call


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def generator(request, tmp_path_factory):
    return ProgramGenerator(tiny_actor_dir(tmp_path_factory.mktemp(request.param), request.param), device="cpu",
                            seed=3)


def _rows_per_forward(model):
    """Rows of every decoder forward the model runs (the encoder is not the top-level forward)."""
    seen = []

    def hook(_module, args, kwargs):
        ids = kwargs.get("decoder_input_ids")
        if ids is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.shape[0])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def _tokens(records):
    return {r["sample_id"]: r["token_ids"] for r in records}


@pytest.mark.parametrize("decoder", ["hf", "static"])
def test_chunked_generation_equals_one_call_and_stays_within_its_budget(generator, decoder):
    """3 prompts x 3 samples in one call, versus calls of at most 2 rows (each prompt's samples split 2 + 1;
    whole-prompt chunks are the same code with other slices, and plan_chunks is checked above). Same seed, same
    tokens, every row."""
    problems = tiny_suite()[0][:3]
    samples, max_rows = 3, 2
    base = dict(num_samples=samples, max_new_tokens=8, max_source_tokens=128, decoder=decoder, temperature=1.0,
                top_p=0.95)
    seen, handle = _rows_per_forward(generator.model)
    try:
        whole = generator.generate(problems, SamplingParams(**base))
        assert max(seen) == 3 * samples
        seen.clear()
        chunked = generator.generate(problems, SamplingParams(**base, max_rows_per_generate=max_rows))
        assert max(seen) <= max_rows
    finally:
        handle.remove()
    assert [r["sample_id"] for r in chunked] == [r["sample_id"] for r in whole]
    assert _tokens(chunked) == _tokens(whole)
    # Not a degenerate model: the samples of a prompt differ from each other.
    assert len({tuple(r["token_ids"]) for r in whole if not r["is_greedy"]}) > samples


def test_samples_do_not_depend_on_the_batching_or_the_decoder(generator):
    problems = tiny_suite()[0][:3]
    params = SamplingParams(num_samples=2, max_new_tokens=8, max_source_tokens=128, temperature=1.0, top_p=0.95)
    together = _tokens(generator.generate(problems, params, round_=2))
    apart = {**_tokens(generator.generate(problems[:1], params, round_=2)),
             **_tokens(generator.generate(problems[1:], params, round_=2))}
    assert apart == together
    static = _tokens(generator.generate(problems, SamplingParams(**{**params.__dict__, "decoder": "static"}),
                                        round_=2))
    assert static == together
    # The key holds the seed and the round: another round draws other programs.
    other = _tokens(generator.generate(problems, params, round_=3))
    assert sum(a != b for a, b in zip(other.values(), together.values())) > 0
