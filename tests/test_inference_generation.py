"""Generating from a seed, for both actor kinds: the program starts with the seed, and batching changes nothing."""

import pytest
import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.inference.continuation import GenerationSettings, batch_inputs, generate_rows, generate_unit
from coderl_ray.inference.procedure import plan_problem
from coderl_ray.inference.stage import units_table
from coderl_ray.models.batching import causal_position_ids, encode_prompt
from coderl_ray.rollout.generator import ProgramGenerator
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module", params=["seq2seq", "causal"])
def generator(request, tmp_path_factory):
    folder = tiny_actor_dir(tmp_path_factory.mktemp(request.param), arch=request.param)
    gen = ProgramGenerator(folder, device="cpu")
    # Random tiny weights put nearly all mass on one token; larger ones make continuations differ by row.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gen.model.parameters():
            p.normal_(0, 0.5)
    return gen


def test_a_continuation_starts_with_its_seed_and_respects_the_token_budget(generator):
    tok = generator.tokenizer
    problems = tiny_suite()[0][:2]
    sources = [encode_prompt(tok, build_prompt(p), 256) for p in problems] * 2
    seeds = [[], [40, 41, 42], [43], [44, 45, 46, 47, 48, 49, 50]]
    settings = GenerationSettings(max_new_tokens=12, max_rows=3)
    torch.manual_seed(1)
    rows = generate_rows(generator.model, tok, sources, seeds, settings)
    for seed, row in zip(seeds, rows):
        assert row[: len(seed)] == seed
        assert len(seed) < len(row) <= 12
        assert tok.eos_token_id not in row[:-1]  # cut after the first EOS


def _next_token_logits(model, inputs):
    if "decoder_input_ids" in inputs:
        return model(**inputs).logits[:, -1]
    # What generate() does for a causal LM: positions that skip the left padding.
    return model(**inputs, position_ids=causal_position_ids(inputs["attention_mask"])).logits[:, -1]


@torch.no_grad()
def test_left_padded_prefixes_in_one_batch_give_each_row_what_it_gets_alone(generator):
    """Rows of different prompt and prefix lengths share a generate() call: the next-token logits of every row are
    those it has on its own, and at a temperature near 0 (greedy) so are the programs."""
    tok = generator.tokenizer
    problems = tiny_suite()[0][:3]
    sources = [encode_prompt(tok, build_prompt(p), 256) for p in problems]
    seeds = [[40, 41, 42, 43, 44], [45], [46, 47]]
    model = generator.model
    together = _next_token_logits(model, batch_inputs(model, tok, sources, seeds)[0])
    for i, (s, q) in enumerate(zip(sources, seeds)):
        alone = _next_token_logits(model, batch_inputs(model, tok, [s], [q])[0])[0]
        assert torch.allclose(together[i], alone, atol=1e-4), (i, (together[i] - alone).abs().max())
    settings = GenerationSettings(temperature=1e-4, top_p=1.0, max_new_tokens=10, max_rows=8)
    together = generate_rows(generator.model, tok, sources, seeds, settings)
    alone = [generate_rows(generator.model, tok, [s], [q], settings)[0] for s, q in zip(sources, seeds)]
    assert together == alone
    assert len({tuple(r[len(q):]) for r, q in zip(together, seeds)}) > 1  # not one token everywhere


def test_a_unit_is_reproducible_and_its_rows_carry_ids_and_the_critics_prompt(generator):
    problem = tiny_suite()[0][0]
    state = [{"problem_id": problem["problem_id"], "sample_id": "x#0", "example_outcome": "passed",
              "token_ids": [40, 41, 42, 2], "seed_len": 2, "seed_value": 0.8, "critic_pass_prob": 0.5, "code": "x"}]
    requests = plan_problem(problem, state, cs_pass=1, n=3, top_k=2, candidates=1, repair=False)
    unit = units_table([requests]).to_pylist()[0]
    settings = GenerationSettings(max_new_tokens=8)
    rows = generate_unit(generator, generator.tokenizer, unit, settings, seed=3)
    assert [r["sample_id"] for r in rows] == [f"{problem['problem_id']}#p1s{j}" for j in range(3)]
    assert all(r["token_ids"][:2] == [40, 41] and r["prefix_len"] == 2 and r["origin"] == "refine"
               and r["parent_id"] == "x#0" for r in rows)
    assert rows[0]["prompt_ids"] == encode_prompt(generator.tokenizer, build_prompt(problem), 600)
    assert rows[0]["code"] == generator.tokenizer.decode(rows[0]["token_ids"], skip_special_tokens=True)
    again = generate_unit(generator, generator.tokenizer, unit, settings, seed=3)
    assert [r["token_ids"] for r in again] == [r["token_ids"] for r in rows]
