"""The embedded task suite: seeded, procedurally generated list-processing problems, written by us.

Every problem is a short pipeline over a list of integers: zero or more *filters* ("keep the even numbers"), zero or
more *maps* ("multiply every number by 3") and one *aggregate* ("print the sum"). The question is English text in
the APPS style (input/output format plus a quoted example); the reference solution is a few lines of Python, one
line per pipeline step, so a small model can learn the mapping from phrases to code in minutes on a CPU.

Why this shape:

* An untrained model scores zero (it cannot produce a runnable program that reads input the right way).
* Difficulty grows with pipeline length: introductory = one step + aggregate, interview = filter + map + aggregate,
  competition = three steps + aggregate. Longer programs give a sampler more places to go wrong, which is what RL
  with unit-test rewards repairs.
* The test split is *compositional*: its combinations of step types never occur in training (a seeded 20% of the
  combinations is held out), and its constants and inputs come from a different random stream. A model must combine
  pieces it has seen, not recall problems.

Both `stdio` problems (read ``n`` and the list from standard input) and `call` problems (a function that receives
the list) are generated, with example tests quoted in the question and hidden tests for the reward.

*Unseen wording* (``unseen_wording`` share, off by default; docs/suite.md says why): a seeded share of the problems
of both splits spells out the constant of one step ("keep only the numbers greater than seven"), a wording no
reference solution shows: the training split's problems of this family keep their question and tests but have no
reference solution. SFT cannot learn what the words mean; a sampler that tries the numbers it knows can find them,
and RL can learn them from the tests and carry them to the test split's problems of the family.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable

# --- the building blocks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One pipeline step: how to say it, how to code it and how to compute it. ``{k}`` is the step's constant."""

    name: str
    kind: str  # "filter" | "map"
    phrases: tuple[str, ...]
    code: str  # expression over x (filter: condition, map: new value)
    fn: Callable[[int, int], Any]
    k_range: tuple[int, int] | None = None


FILTERS = (
    Step("even", "filter", ("keep only the even numbers", "remove every odd number"), "x % 2 == 0",
         lambda x, k: x % 2 == 0),
    Step("odd", "filter", ("keep only the odd numbers", "remove every even number"), "x % 2 == 1",
         lambda x, k: x % 2 == 1),
    Step("positive", "filter", ("keep only the positive numbers", "remove every number that is not positive"),
         "x > 0", lambda x, k: x > 0),
    Step("negative", "filter", ("keep only the negative numbers", "remove every number that is not negative"),
         "x < 0", lambda x, k: x < 0),
    Step("greater", "filter", ("keep only the numbers greater than {k}", "remove every number not greater than {k}"),
         "x > {k}", lambda x, k: x > k, (-5, 9)),
    Step("less", "filter", ("keep only the numbers less than {k}", "remove every number not less than {k}"),
         "x < {k}", lambda x, k: x < k, (-5, 9)),
    Step("divisible", "filter", ("keep only the numbers divisible by {k}", "remove every number not divisible by {k}"),
         "x % {k} == 0", lambda x, k: x % k == 0, (3, 9)),
)

MAPS = (
    Step("multiply", "map", ("multiply every number by {k}", "replace each number x by x times {k}"), "x * {k}",
         lambda x, k: x * k, (2, 9)),
    Step("add", "map", ("add {k} to every number", "increase each number by {k}"), "x + {k}",
         lambda x, k: x + k, (1, 9)),
    Step("subtract", "map", ("subtract {k} from every number", "decrease each number by {k}"), "x - {k}",
         lambda x, k: x - k, (1, 9)),
    Step("square", "map", ("square every number", "replace each number by its square"), "x * x",
         lambda x, k: x * x),
    Step("negate", "map", ("negate every number", "replace each number by its negation"), "-x",
         lambda x, k: -x),
    Step("abs", "map", ("take the absolute value of every number", "replace each number by its absolute value"),
         "abs(x)", lambda x, k: abs(x)),
)


@dataclass(frozen=True)
class Aggregate:
    name: str
    phrases: tuple[str, ...]  # what to output
    code: str  # expression over the final list ``a``
    fn: Callable[[list[int]], Any]
    empty_note: str = ""  # sentence about the empty list, when it needs one


AGGREGATES = (
    Aggregate("sum", ("the sum of the remaining numbers", "the total of the numbers that are left"), "sum(a)", sum),
    Aggregate("count", ("how many numbers remain", "the number of numbers that are left"), "len(a)", len),
    Aggregate("max", ("the largest remaining number", "the maximum of the numbers that are left"),
              "max(a) if a else 0", lambda a: max(a) if a else 0, "If no numbers remain, the answer is 0."),
    Aggregate("min", ("the smallest remaining number", "the minimum of the numbers that are left"),
              "min(a) if a else 0", lambda a: min(a) if a else 0, "If no numbers remain, the answer is 0."),
    Aggregate("list", ("the remaining numbers in their original order", "the numbers that are left, in order"),
              "a", list),
    Aggregate("sorted", ("the remaining numbers in increasing order", "the numbers that are left, sorted from "
                         "smallest to largest"), "sorted(a)", sorted),
)

STEPS = {s.name: s for s in FILTERS + MAPS}
# The unseen-wording family spells one constant out. "one" is left out: statements already say "Print one integer".
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
AGGS = {a.name: a for a in AGGREGATES}
FN_NAMES = ("solve", "compute", "process", "answer", "transform")

# Pipeline shapes per difficulty: the kinds of the steps before the aggregate.
SHAPES = {
    "introductory": (("filter",), ("map",)),
    "interview": (("filter", "map"),),
    "competition": (("filter", "filter", "map"), ("filter", "map", "map"), ("map", "filter", "map")),
}
DIFFICULTIES = tuple(SHAPES)

# The held-out fraction of step-type combinations, and the seed that picks them. The split seed is fixed so that
# every suite seed holds out the same combinations: "test" always means "unseen composition".
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 20221128


# --- combinations and the train/test split ---------------------------------------------------------------------


Combo = tuple[str, ...]  # step names then the aggregate name, e.g. ("even", "square", "sum")


def all_combos(difficulty: str) -> list[Combo]:
    out = []
    for shape in SHAPES[difficulty]:
        pools = [[s.name for s in (FILTERS if kind == "filter" else MAPS)] for kind in shape]
        for steps in itertools.product(*pools):
            if len(set(steps)) < len(steps):
                continue  # "keep the even numbers, keep the even numbers" is not a problem
            for agg in AGGS:
                out.append((*steps, agg))
    return out


def split_combos(difficulty: str) -> tuple[list[Combo], list[Combo]]:
    """(train combos, held-out test combos) for a difficulty; the same for every suite seed."""
    combos = all_combos(difficulty)
    rng = random.Random(f"{SPLIT_SEED}-{difficulty}")
    held = set(rng.sample(range(len(combos)), max(1, round(HOLDOUT_FRACTION * len(combos)))))
    train = [c for i, c in enumerate(combos) if i not in held]
    test = [c for i, c in enumerate(combos) if i in held]
    return train, test


# --- rendering one problem -------------------------------------------------------------------------------------


def _apply(combo: Combo, ks: list[int | None], values: list[int]) -> Any:
    a = list(values)
    for name, k in zip(combo[:-1], ks):
        step = STEPS[name]
        a = [x for x in a if step.fn(x, k)] if step.kind == "filter" else [step.fn(x, k) for x in a]
    return AGGS[combo[-1]].fn(a)


def _random_list(rng: random.Random, min_len: int = 1) -> list[int]:
    return [rng.randint(-20, 20) for _ in range(rng.randint(min_len, 8))]


def _mutants(combo: Combo, ks: list[int | None]) -> list[tuple[Combo, list[int | None]]]:
    """Programs one mistake away from the reference: a step dropped, or the aggregate swapped.

    (Swapping min and max, or list and sorted, can coincide on an input, never on all of them.)"""
    out = [(combo[:i] + combo[i + 1:], ks[:i] + ks[i + 1:]) for i in range(len(combo) - 1)]
    out += [(combo[:-1] + (agg,), ks) for agg in AGGS if agg != combo[-1]]
    return out


class _Degenerate(Exception):
    """A drawn problem where some step changes nothing (e.g. absolute values of positive numbers)."""


def _hidden_lists(combo: Combo, ks: list[int | None], rng: random.Random, n: int) -> list[list[int]]:
    """Random inputs, redrawn until they tell the reference from every mutant.

    Without this, a filter such as "divisible by 8" empties most random lists, and a program that forgot a step
    would pass by luck, a false reward the RL stage would learn from. When no draw separates a mutant, the step it
    drops does nothing for this problem, and the problem is redrawn (:class:`_Degenerate`).
    """
    for _ in range(50):
        lists = [_random_list(rng, min_len=3) for _ in range(n)]
        expected = [_apply(combo, ks, v) for v in lists]
        if all(any(_apply(c, k, v) != e for v, e in zip(lists, expected)) for c, k in _mutants(combo, ks)):
            return lists
    raise _Degenerate(combo)


def _stdio_text(values: list[int]) -> str:
    return f"{len(values)}\n{' '.join(map(str, values))}\n"


def _stdio_answer(value: Any) -> str:
    return (" ".join(map(str, value)) if isinstance(value, list) else str(value)) + "\n"


def _sentences(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _capitalize(s: str) -> str:
    return s[0].upper() + s[1:]


def make_problem(combo: Combo, kind: str, rng: random.Random, problem_id: str, difficulty: str,
                 n_tests: int = 8, n_examples: int = 1, unseen_wording: bool = False) -> dict[str, Any]:
    """One problem record. ``unseen_wording``: the constant of one of its constant-taking steps (a seeded choice,
    redrawn in 2..9 when out of that range) is spelled out ("greater than seven"), the others are digits."""
    steps = [STEPS[n] for n in combo[:-1]]
    agg = AGGS[combo[-1]]
    ks = [rng.randint(*s.k_range) if s.k_range else None for s in steps]
    phrase = rng.randrange(2)  # one paraphrase per problem, so wording varies across problems
    # One spelled-out constant, not all: a sampler then has one number to guess, and the rest of the program is what
    # SFT taught, so the family's rewards are not all zero (docs/suite.md).
    unseen_at = rng.choice([i for i, s in enumerate(steps) if s.k_range]) if unseen_wording else -1
    if unseen_at >= 0 and ks[unseen_at] not in NUMBER_WORDS:
        ks[unseen_at] = rng.randint(max(2, steps[unseen_at].k_range[0]), 9)
    step_text = [s.phrases[phrase].format(k=NUMBER_WORDS[k] if i == unseen_at else k)
                 for i, (s, k) in enumerate(zip(steps, ks))]
    steps_sentence = ", then ".join(step_text)
    fn_name = rng.choice(FN_NAMES)

    lists = [_random_list(rng) for _ in range(n_examples)] + _hidden_lists(combo, ks, rng, n_tests)
    answers = [_apply(combo, ks, v) for v in lists]

    body_lines = [f"a = [{s.code.format(k=k)} for x in a]" if s.kind == "map"
                  else f"a = [x for x in a if {s.code.format(k=k)}]" for s, k in zip(steps, ks)]
    if kind == "stdio":
        what = agg.phrases[phrase]
        output = ("Print the numbers on one line, separated by spaces." if agg.name in ("list", "sorted")
                  else "Print one integer.")
        question = (_sentences("You are given a list of integers.", f"{_capitalize(steps_sentence)}.",
                               f"Print {what}.", agg.empty_note) + "\n\n-----Input-----\n\nThe first line contains an integer n. The second line "
                    f"contains n integers.\n\n-----Output-----\n\n{output}\n")
        out_expr = f"*{agg.code}" if agg.name in ("list", "sorted") else agg.code
        solution = "\n".join(["n = int(input())", "a = list(map(int, input().split()))", *body_lines,
                              f"print({out_expr})"]) + "\n"
        inputs = [_stdio_text(v) for v in lists]
        outputs = [_stdio_answer(x) for x in answers]
        examples = "".join(f"\n-----Example-----\nInput\n{inputs[i]}\nOutput\n{outputs[i]}"
                           for i in range(n_examples))
        question += examples
        starter = ""
        fn = None
    else:
        what = agg.phrases[phrase]
        ret = "Return a list." if agg.name in ("list", "sorted") else "Return an integer."
        question = _sentences(f"Write a function {fn_name}(nums) that takes a list of integers.",
                              f"{_capitalize(steps_sentence)}.", f"Return {what}.", agg.empty_note, ret) + "\n"
        solution = "\n".join([f"def {fn_name}(nums):", "    a = list(nums)", *("    " + ln for ln in body_lines),
                              f"    return {agg.code}"]) + "\n"
        inputs = [[v] for v in lists]
        outputs = answers
        examples = "".join(f"\nExample: {fn_name}({lists[i]}) == {answers[i]}" for i in range(n_examples))
        question += examples + "\n"
        starter = f"def {fn_name}(nums):\n"
        fn = fn_name

    tests = {"kind": kind, "inputs": inputs[n_examples:], "outputs": outputs[n_examples:]}
    example_tests = {"kind": kind, "inputs": inputs[:n_examples], "outputs": outputs[:n_examples]}
    problem = {
        "problem_id": problem_id, "source": "suite", "difficulty": difficulty, "question": question,
        "starter_code": starter, "fn_name": fn, "tests": tests, "example_tests": example_tests,
        "solutions": [solution], "combo": "+".join(combo),
    }
    # Only the family's problems are marked, so the suite without the family is byte for byte the one before it.
    return {**problem, "wording": "unseen"} if unseen_wording else problem


# --- the suite -------------------------------------------------------------------------------------------------


def generate_split(split: str, n: int, seed: int, unseen_wording: float = 0.0,
                   withhold_references: bool = True) -> list[dict[str, Any]]:
    """``n`` problems of the ``"train"`` or ``"test"`` split, evenly spread over the three difficulties.

    Train and test never share a combination of step types, and draw constants and inputs from different streams
    (the stream is seeded by split name and seed).

    ``unseen_wording``: the share of problems (a seeded choice of round(share * n) positions) that belong to the
    unseen-wording family: a combination with at least one constant-taking step, one constant spelled out
    (:data:`NUMBER_WORDS`), drawn from a stream of its own, so every other problem is the one the suite has without
    the family. In the training split they have no reference solution (``withhold_references=False`` keeps it, for
    checking their tests).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0.0 <= unseen_wording <= 1.0:
        raise ValueError(f"unseen_wording is a share of the problems, in [0, 1]; got {unseen_wording}")
    rng = random.Random(f"suite-{split}-{seed}")
    family_rng = random.Random(f"suite-{split}-{seed}-unseen-wording")
    family = set(family_rng.sample(range(n), round(unseen_wording * n)))
    problems = []
    for i in range(n):
        difficulty = DIFFICULTIES[i % len(DIFFICULTIES)]
        train_combos, test_combos = split_combos(difficulty)
        combos = train_combos if split == "train" else test_combos
        pid = f"suite/{split}/{seed}/{i:05d}"
        # Drawn even where the family replaces it, so that the other problems do not depend on the family's share.
        problem = _draw(combos, rng, pid, difficulty, unseen_wording=False)
        if i in family:
            with_constant = [c for c in combos if any(STEPS[name].k_range for name in c[:-1])]
            problem = _draw(with_constant, family_rng, pid, difficulty, unseen_wording=True)
            if split == "train" and withhold_references:
                problem["solutions"] = []
        problems.append(problem)
    return problems


def _draw(combos: list[Combo], rng: random.Random, problem_id: str, difficulty: str,
          unseen_wording: bool) -> dict[str, Any]:
    while True:
        combo = rng.choice(combos)
        kind = rng.choice(("stdio", "call"))
        try:
            return make_problem(combo, kind, rng, problem_id, difficulty, unseen_wording=unseen_wording)
        except _Degenerate:
            continue


def generate_suite(seed: int = 0, n_train: int = 400, n_test: int = 90,
                   unseen_wording: float = 0.0) -> tuple[list[dict], list[dict]]:
    """(train problems, test problems) of the embedded suite, as canonical problem records."""
    return (generate_split("train", n_train, seed, unseen_wording),
            generate_split("test", n_test, seed, unseen_wording))
