"""A training target cut at the length limit does not end in EOS: reference programs and sampled programs."""

import pytest

from coderl_ray.models.batching import encode_program
from coderl_ray.models.tokenizer import load_tokenizer
from coderl_ray.rl.replay_buffer import ground_truth_rows
from coderl_ray.rollout.generator import ProgramGenerator, SamplingParams
from tests.helpers import tiny_actor_dir, tiny_suite


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    return tiny_actor_dir(tmp_path_factory.mktemp("targets"))


def test_a_program_gets_eos_only_when_it_fits_whole(actor):
    tok = load_tokenizer(actor)
    eos = tok.eos_token_id
    code = tiny_suite()[0][0]["solutions"][0]
    ids = tok(code, add_special_tokens=False).input_ids
    n = len(ids)
    assert n > 10 and eos not in ids
    assert encode_program(tok, code, n + 5) == ids + [eos]
    assert encode_program(tok, code, n + 1) == ids + [eos]  # exactly room for EOS
    assert encode_program(tok, code, n) == ids  # whole, but no room for EOS: cut at EOS, so no EOS
    assert encode_program(tok, code, 7) == ids[:7]  # cut: the first 7 tokens, the last one not EOS


def test_reference_rows_cut_at_the_target_limit_end_without_eos(actor):
    tok = load_tokenizer(actor)
    problems = tiny_suite()[0]
    full = ground_truth_rows(problems, tok, 256, 10**6)
    lengths = sorted(len(r["token_ids"]) for r in full)  # with EOS
    limit = lengths[len(lengths) // 2]  # the median: about half the programs are cut
    rows = ground_truth_rows(problems, tok, 256, limit)
    for whole, r in zip(full, rows):
        if len(whole["token_ids"]) <= limit:
            assert r["token_ids"] == whole["token_ids"] and r["token_ids"][-1] == tok.eos_token_id
        else:
            assert r["token_ids"] == whole["token_ids"][:limit] and r["token_ids"][-1] != tok.eos_token_id
    assert 0 < sum(r["token_ids"][-1] != tok.eos_token_id for r in rows) < len(rows)


@pytest.mark.parametrize("decoder", ["hf", "static"])
def test_sampled_programs_that_hit_the_token_limit_have_no_eos(actor, decoder):
    gen = ProgramGenerator(actor, device="cpu", seed=0)
    eos = gen.tokenizer.eos_token_id
    samples = gen.generate(tiny_suite()[0][:4], SamplingParams(num_samples=4, max_new_tokens=5, decoder=decoder))
    unfinished = [s["token_ids"] for s in samples if eos not in s["token_ids"]]
    assert unfinished  # a random tiny model rarely says EOS within 5 tokens
    assert all(len(ids) == 5 for ids in unfinished)
    assert all(ids.index(eos) == len(ids) - 1 for s in samples if eos in (ids := s["token_ids"]))
