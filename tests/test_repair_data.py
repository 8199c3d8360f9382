"""Repair pairs from a hand-made replay buffer (pure, no Ray): which failures, which target, dedup, the cap."""

import pytest

from coderl_ray.inference.repair_data import repair_pairs, repair_rows

REF = "def f(x):\n    return x + 1\n"
PROBLEMS = [
    {"problem_id": "p1", "question": "Add one.", "tests": {"kind": "assert"}, "solutions": [REF]},
    {"problem_id": "p2", "question": "Double.", "tests": {"kind": "assert"}, "solutions": []},
    {"problem_id": "p3", "question": "Hard.", "tests": {"kind": "assert"}, "solutions": []},
]


def _row(pid, sid, outcome, code, error=""):
    return {"problem_id": pid, "sample_id": sid, "outcome": outcome, "code": code, "error": error}


BUFFER = [
    _row("p1", "p1#r1s0", "failed", "def f(x):\n    return x + 2", "assert f(1) == 2"),
    _row("p1", "p1#r2s1", "failed", "def f(x):\n    return x + 2\n\n", "assert f(1) == 2"),  # same code as s0
    _row("p1", "p1#r1s2", "compile_error", "def f(x) return x", "SyntaxError: invalid syntax"),
    _row("p1", "p1#r1s3", "infra_error", "def f(x):\n    return x", "sandbox died"),  # never an input
    _row("p1", "p1#r1s4", "passed", "def f(x):\n    return 1 + x"),
    _row("p1", "p1#r1g", "runtime_error", "def f(x):\n    return 3 + x / 0", "ZeroDivisionError: division by zero"),
    _row("p1", "p1#r2s4", "passed", "def f(x):\n    return x + 1"),  # equal to the reference: not a second target
    _row("p2", "p2#r1s0", "timeout", "def g(x):\n    while True: pass", "timed out"),
    _row("p2", "p2#r1s1", "passed", "def g(x):\n    return 2 * x"),
    _row("p3", "p3#r1s0", "failed", "def h(): return 0", "assert h() == 1"),  # no passing program: no pair
    _row("p9", "p9#r1s0", "failed", "x", "?"),  # not one of the problems: ignored
]


def test_pairs_from_a_small_buffer_match_the_hand_made_expectation():
    pairs = repair_pairs(PROBLEMS, BUFFER, max_pairs_per_problem=4, seed=0)
    # p1's targets: the reference (p1#gt0) and the distinct passing sample p1#r1s4 ("return 1 + x"); p1#r2s4 equals
    # the reference. Each failure takes the target closest to it: "x + 2" and "x) return x" are closer to
    # "return x + 1"; "3 + x / 0" is closer to "return 1 + x".
    assert pairs == [
        {"problem_id": "p1", "sample_id": "p1#r1g", "outcome": "runtime_error",
         "error": "ZeroDivisionError: division by zero", "program": "def f(x):\n    return 3 + x / 0",
         "target_id": "p1#r1s4", "target": "def f(x):\n    return 1 + x"},
        {"problem_id": "p1", "sample_id": "p1#r1s0", "outcome": "failed", "error": "assert f(1) == 2",
         "program": "def f(x):\n    return x + 2", "target_id": "p1#gt0", "target": REF.strip()},
        {"problem_id": "p1", "sample_id": "p1#r1s2", "outcome": "compile_error",
         "error": "SyntaxError: invalid syntax", "program": "def f(x) return x", "target_id": "p1#gt0",
         "target": REF.strip()},
        {"problem_id": "p2", "sample_id": "p2#r1s0", "outcome": "timeout", "error": "timed out",
         "program": "def g(x):\n    while True: pass", "target_id": "p2#r1s1", "target": "def g(x):\n    return 2 * x"},
    ]
    # The rows' order does not matter.
    assert repair_pairs(PROBLEMS, BUFFER[::-1], max_pairs_per_problem=4, seed=0) == pairs


def test_the_cap_is_a_seeded_draw_among_distinct_failures():
    # p1 has 3 distinct failures (s0 = r2s1, s2, g); a cap of 2 keeps 2 of them, the same 2 for the same seed.
    capped = repair_pairs(PROBLEMS, BUFFER, max_pairs_per_problem=2, seed=0)
    p1 = [p["sample_id"] for p in capped if p["problem_id"] == "p1"]
    assert len(p1) == 2 and set(p1) <= {"p1#r1s0", "p1#r1s2", "p1#r1g"}
    assert p1 == sorted(p1)
    assert repair_pairs(PROBLEMS, BUFFER[::-1], max_pairs_per_problem=2, seed=0) == capped
    drawn = {tuple(p["sample_id"] for p in repair_pairs(PROBLEMS, BUFFER, 2, seed=s) if p["problem_id"] == "p1")
             for s in range(20)}
    assert len(drawn) == 3  # over 20 seeds every 2-of-3 subset appears: the draw is not a fixed prefix
    assert [p["sample_id"] for p in capped if p["problem_id"] == "p2"] == ["p2#r1s0"]
    with pytest.raises(ValueError, match="max_pairs_per_problem"):
        repair_pairs(PROBLEMS, BUFFER, max_pairs_per_problem=0)


def test_rows_encode_the_repair_prompt_and_the_target(tmp_path):
    from coderl_ray.data.prompts import build_repair_prompt
    from coderl_ray.models.tokenizer import load_tokenizer
    from tests.helpers import tiny_actor_dir

    tok = load_tokenizer(tiny_actor_dir(tmp_path))
    pairs = repair_pairs(PROBLEMS, BUFFER, max_pairs_per_problem=4)
    rows = repair_rows(pairs, PROBLEMS, tok, max_source_tokens=40, max_target_tokens=8)
    assert [r["sample_id"] for r in rows] == ["p1#r1g>p1#r1s4", "p1#r1s0>p1#gt0", "p1#r1s2>p1#gt0",
                                              "p2#r1s0>p2#r1s1"]
    first = rows[0]
    assert len(first["prompt_ids"]) <= 40 and len(first["token_ids"]) == 8
    # The target was cut at 8 tokens: like every truncated reference, it does not end in EOS (the model must not
    # learn to stop mid-program).
    assert tok.eos_token_id not in first["token_ids"]
    full = tok(build_repair_prompt(PROBLEMS[0], pairs[0]["program"], "runtime_error", pairs[0]["error"]),
               add_special_tokens=False).input_ids
    # Cut from the left: the prompt's end (the error, then "ANSWER:") survives.
    body = [t for t in first["prompt_ids"] if t not in tok.all_special_ids]
    assert body == full[-len(body):] and len(full) > len(body)
    assert tok.decode(first["token_ids"], skip_special_tokens=True).replace(" ", "").startswith("deff(x")


@pytest.mark.parametrize("overrides, key", [
    (["repair.max_pairs_per_problem=0"], "repair.max_pairs_per_problem"),
    (["repair.epochs=0"], "repair.epochs"),
    (["repair.enabled=true", "rl.rounds=0"], "repair.enabled needs rl.rounds >= 1"),
    (["critic.inference_classes=2", "rl.rounds=0"], "critic.inference_classes=2 needs rl.rounds >= 1"),
    (["critic.inference_classes=3"], "critic.inference_classes"),
])
def test_config_errors_name_the_key(overrides, key):
    from coderl_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)
