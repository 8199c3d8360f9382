"""Critic sampling generates with the rollout's generator: rows of (source, prefix, key), for both actor kinds.

The program starts with its seed, batching and chunking change nothing (keyed sampling), the static decoder gives
what ``generate`` gives (seq2seq rows with a prefix fall back to it), and a plain keyed row is the rollout's sample.
"""

import dataclasses

import pytest
import torch

from coderl_ray.data.prompts import build_prompt
from coderl_ray.inference.continuation import cs_sample_key, cs_sampling_params, generate_unit
from coderl_ray.inference.procedure import plan_problem
from coderl_ray.inference.stage import units_table
from coderl_ray.models.batching import causal_position_ids, encode_prompt
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams, sample_key
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


def _rows(generator, n_problems=2):
    tok = generator.tokenizer
    problems = tiny_suite()[0][:n_problems]
    sources = [encode_prompt(tok, build_prompt(p), 256) for p in problems] * 2
    seeds = [[], [40, 41, 42], [43], [44, 45, 46, 47, 48, 49, 50]][: len(sources)]
    keys = [cs_sample_key(3, 1, "p", i) for i in range(len(sources))]
    return sources, seeds, keys


def test_a_continuation_starts_with_its_seed_and_respects_the_token_budget(generator):
    sources, seeds, keys = _rows(generator)
    rows = generator.generate_rows(sources, seeds, keys, SamplingParams(max_new_tokens=12, max_rows_per_generate=3))
    for seed, row in zip(seeds, rows):
        assert row[: len(seed)] == seed
        assert len(seed) < len(row) <= 12
        assert generator.tokenizer.eos_token_id not in row[:-1]  # cut after the first EOS


def _next_token_logits(model, inputs):
    if "decoder_input_ids" in inputs:
        return model(**inputs).logits[:, -1]
    # What generate() does for a causal LM: positions that skip the left padding.
    return model(**inputs, position_ids=causal_position_ids(inputs["attention_mask"])).logits[:, -1]


@torch.no_grad()
def test_left_padded_prefixes_in_one_batch_give_each_row_what_it_gets_alone(generator):
    """Rows of different prompt and prefix lengths share a generate() call: the next-token logits of every row are
    those it has on its own, and with keyed sampling (temperature 0.6, top-k 50) so are the programs."""
    tok = generator.tokenizer
    problems = tiny_suite()[0][:3]
    sources = [encode_prompt(tok, build_prompt(p), 256) for p in problems]
    seeds = [[40, 41, 42, 43, 44], [45], [46, 47]]
    model = generator.model
    together = _next_token_logits(model, generator.row_inputs(sources, seeds))
    for i, (s, q) in enumerate(zip(sources, seeds)):
        alone = _next_token_logits(model, generator.row_inputs([s], [q]))[0]
        assert torch.allclose(together[i], alone, atol=1e-4), (i, (together[i] - alone).abs().max())
    params = SamplingParams(temperature=0.6, top_p=0.95, top_k=50, max_new_tokens=10)
    keys = [11, 12, 13]
    together = generator.generate_rows(sources, seeds, keys, params)
    alone = [generator.generate_rows([s], [q], [k], params)[0] for s, q, k in zip(sources, seeds, keys)]
    assert together == alone
    assert len({tuple(r[len(q):]) for r, q in zip(together, seeds)}) > 1  # not one token everywhere
    # One call, or calls of one row each: the same programs.
    assert generator.generate_rows(sources, seeds, keys, dataclasses.replace(params, max_rows_per_generate=1)) \
        == together


def test_the_static_decoder_gives_what_generate_gives_with_and_without_prefixes(generator):
    """Plain rows go through the static decoder, seq2seq rows with a prefix through generate() (the static decoder
    has no decoder-prefix input); keyed sampling makes both the programs generate() alone draws."""
    sources, seeds, keys = _rows(generator)
    hf = SamplingParams(temperature=0.6, top_k=50, max_new_tokens=10)
    static = dataclasses.replace(hf, decoder="static")
    assert generator.generate_rows(sources, seeds, keys, static) == generator.generate_rows(sources, seeds, keys, hf)


def test_a_plain_keyed_row_is_the_rollouts_sample(generator):
    """One implementation: the rollout's generate() and generate_rows() with the rollout's keys draw the same
    programs."""
    problems = tiny_suite()[0][:3]
    params = SamplingParams(num_samples=2, temperature=0.6, top_k=50, max_new_tokens=10, greedy_baseline=False)
    rollout = generator.generate(problems, params, round_=2)
    tok = generator.tokenizer
    sources = [encode_prompt(tok, build_prompt(p), params.max_source_tokens) for p in problems for _ in range(2)]
    keys = [sample_key(generator.seed, 2, p["problem_id"], k) for p in problems for k in range(2)]
    rows = generator.generate_rows(sources, [[] for _ in sources], keys, params)
    assert rows == [s["token_ids"] for s in rollout]


def test_a_unit_is_reproducible_and_its_rows_carry_ids_and_the_critics_prompt(generator):
    problem = tiny_suite()[0][0]
    state = [{"problem_id": problem["problem_id"], "sample_id": "x#0", "example_outcome": "passed",
              "token_ids": [40, 41, 42, 2], "seed_len": 2, "seed_value": 0.8, "critic_pass_prob": 0.5, "code": "x"}]
    requests = plan_problem(problem, state, cs_pass=1, n=3, top_k=2, candidates=1, repair=False)
    unit = units_table([requests]).to_pylist()[0]
    params = SamplingParams(max_new_tokens=8)
    rows = generate_unit(generator, generator.tokenizer, unit, params, seed=3)
    assert [r["sample_id"] for r in rows] == [f"{problem['problem_id']}#p1s{j}" for j in range(3)]
    assert all(r["token_ids"][:2] == [40, 41] and r["prefix_len"] == 2 and r["origin"] == "refine"
               and r["parent_id"] == "x#0" for r in rows)
    assert rows[0]["prompt_ids"] == encode_prompt(generator.tokenizer, build_prompt(problem), 600)
    assert rows[0]["code"] == generator.tokenizer.decode(rows[0]["token_ids"], skip_special_tokens=True)
    again = generate_unit(generator, generator.tokenizer, unit, params, seed=3)
    assert [r["token_ids"] for r in again] == [r["token_ids"] for r in rows]
    # A row's program is its own: the last row generated alone (a unit of one request) is the same program.
    last = {**unit, "requests": [{**unit["requests"][-1]}]}
    alone = generate_unit(generator, generator.tokenizer, last, params, seed=3)
    assert alone[-1]["token_ids"] == rows[-1]["token_ids"]


def test_critic_sampling_samples_with_its_temperature_and_the_rollouts_top_k():
    from coderl_ray.config import load_config

    cfg = load_config(None, ["cs.temperature=0.8", "cs.top_p=0.9", "rollout.top_k=7", "rollout.decoder=static",
                             "rollout.max_rows_per_generate=33"])
    p = cs_sampling_params(cfg)
    assert (p.temperature, p.top_p, p.top_k, p.decoder, p.max_rows_per_generate) == (0.8, 0.9, 7, "static", 33)
    assert p.max_new_tokens == cfg.rollout.max_new_tokens and p.max_source_tokens == cfg.model.max_source_tokens
    # Keys: one stream per (seed, pass, problem, index), apart from the rollout's.
    assert len({cs_sample_key(0, c, "p", i) for c in range(3) for i in range(5)}) == 15
    assert cs_sample_key(0, 1, "p", 2) != sample_key(0, 1, "p", 2)


def test_critic_sampling_scores_with_rl_scorings_core(generator, tmp_path):
    """Critic sampling's scorer = CriticScorer (RL scoring's table -> table) + the pure sampling_columns step: the same
    "passed" probability as score_programs, the seed from the token logits, the verdict under example_* names."""
    import pyarrow as pa

    from coderl_ray.inference.procedure import best_prefix, token_pass_probs
    from coderl_ray.inference.stage import sampling_columns
    from coderl_ray.models.critic import build_critic, load_critic, score_programs
    from coderl_ray.rl.scoring import CriticScorer

    build_critic(generator.model.name_or_path, n_classes=4, head_hidden=8).save_pretrained(tmp_path / "critic")
    generator.tokenizer.save_pretrained(tmp_path / "critic")
    scorer = CriticScorer.load(str(tmp_path / "critic"), device="cpu")
    tok = generator.tokenizer
    problems = tiny_suite()[0][:2]
    rows = [{"problem_id": p["problem_id"], "sample_id": f"{p['problem_id']}#p0s{j}",
             "prompt_ids": encode_prompt(tok, build_prompt(p), 256), "token_ids": [40 + j, 41, 42, 43][: 2 + j],
             "outcome": "failed", "passed_tests": 0, "total_tests": 1, "error": "boom", "duration_s": 0.1,
             "test_results": [False]} for p in problems for j in range(2)]
    scored = scorer(pa.Table.from_pylist(rows))
    direct = score_programs(load_critic(tmp_path / "critic").eval(), rows, tok.pad_token_id)
    assert scored.column("critic_pass_prob").to_pylist() == pytest.approx([s.pass_prob for s in direct])
    assert scored.column("critic_pred").to_pylist() == [s.pred for s in direct]
    # Scoring scored rows again (the online loop's rows, measured by the round's critic) replaces their scores.
    stale = scored.set_column(scored.schema.get_field_index("critic_pass_prob"), "critic_pass_prob",
                              pa.array([2.0] * len(rows)))
    again = scorer(stale)
    assert again.schema.names == scored.schema.names and again.equals(scored)
    out = sampling_columns(scored, frozenset({problems[0]["problem_id"]}), scorer.n_classes).to_pylist()
    assert [r["seed_len"] for r in out] == [best_prefix(token_pass_probs(s.token_logits))[0] for s in direct]
    assert [r["example_outcome"] for r in out] == ["failed", "failed", None, None]  # problem 1: no example tests
    assert "critic_logits" not in out[0] and "test_results" not in out[0] and out[0]["example_error"] == "boom"
