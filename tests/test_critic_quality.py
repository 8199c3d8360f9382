"""The critic's ranking quality: AUC with ties, accuracy next to the majority-class rate (pure, no Ray)."""

import pytest

from coderl_ray.rl.scoring import critic_quality, roc_auc


def test_auc_counts_ties_as_one_half():
    scores = [0.8, 0.4, 0.4, 0.4, 0.2, 0.9]
    positives = [True, True, False, False, True, False]
    # positives 0.8, 0.4, 0.2 against negatives 0.4, 0.4, 0.9 (3 x 3 = 9 pairs):
    #   0.8: beats 0.4, 0.4, loses to 0.9       -> 2
    #   0.4: ties 0.4, 0.4, loses to 0.9        -> 0.5 + 0.5 = 1
    #   0.2: loses to all three                 -> 0
    # AUC = 3 / 9
    assert roc_auc(scores, positives) == pytest.approx(3 / 9)
    # Order of the rows does not matter.
    assert roc_auc(scores[::-1], positives[::-1]) == pytest.approx(3 / 9)


def test_auc_extremes_and_undefined():
    assert roc_auc([0.1, 0.2, 0.9], [False, False, True]) == 1.0
    assert roc_auc([0.9, 0.2, 0.1], [False, False, True]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5  # a constant score ranks nothing
    assert roc_auc([0.3, 0.7], [True, True]) is None  # no negative to rank against
    assert roc_auc([], []) is None
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        roc_auc([0.1, 0.2, 0.3], [True, False])


def _row(outcome, pred, prob):
    return {"outcome": outcome, "critic_pred": pred, "critic_pass_prob": prob}


def test_quality_of_a_4_class_critic_against_always_answering_failed():
    rows = [
        _row("failed", 2, 0.10),         # right
        _row("failed", 3, 0.60),         # wrong (said passed)
        _row("failed", 2, 0.30),         # right
        _row("timeout", 1, 0.05),        # right: a timeout is a runtime error (class 1)
        _row("compile_error", 2, 0.20),  # wrong
        _row("passed", 3, 0.70),         # right
        _row("passed", 2, 0.30),         # wrong
        _row("infra_error", 3, 0.99),    # no label: left out of every number
    ]
    q = critic_quality(rows, n_classes=4)
    # 7 labelled programs, 4 right -> 4/7; classes: failed x3, runtime x1, compile x1, passed x2 -> majority 3/7.
    assert q["programs"] == 7 and q["passed"] == 2
    assert q["accuracy"] == pytest.approx(4 / 7)
    assert q["majority_rate"] == pytest.approx(3 / 7)
    # AUC: positives 0.70, 0.30 against negatives 0.10, 0.60, 0.30, 0.05, 0.20 (2 x 5 = 10 pairs):
    #   0.70 beats all 5 -> 5; 0.30 beats 0.10, 0.05, 0.20, ties 0.30, loses to 0.60 -> 3.5. AUC = 8.5 / 10.
    assert q["auc"] == pytest.approx(0.85)


def test_within_problem_auc_ignores_how_hard_problems_are():
    rows = [
        # easy problem: high scores; the failed one scores lowest of the problem
        {**_row("passed", 1, 0.9), "problem_id": "easy"}, {**_row("passed", 1, 0.8), "problem_id": "easy"},
        {**_row("failed", 1, 0.7), "problem_id": "easy"},
        # hard problem: low scores; the passed one ties with a failed one
        {**_row("passed", 0, 0.2), "problem_id": "hard"}, {**_row("failed", 0, 0.2), "problem_id": "hard"},
        {**_row("failed", 0, 0.1), "problem_id": "hard"},
        # all failed: no pair to rank inside it
        {**_row("failed", 0, 0.5), "problem_id": "none"},
    ]
    q = critic_quality(rows, n_classes=2)
    # within: easy 2/2 pairs won -> 1.0; hard: 0.2 vs 0.2 tie (0.5), 0.2 > 0.1 (1) -> 1.5/2 = 0.75; mean 0.875.
    assert q["mixed_problems"] == 2 and q["auc_within_problems"] == pytest.approx(0.875)
    # overall: positives 0.9, 0.8, 0.2 vs negatives 0.7, 0.2, 0.1, 0.5 (12 pairs): 0.9 -> 4, 0.8 -> 4,
    # 0.2 -> tie 0.2 (0.5) + 0.1 (1) = 1.5; 9.5 / 12.
    assert q["auc"] == pytest.approx(9.5 / 12)
    assert critic_quality(rows[-1:], n_classes=2)["auc_within_problems"] is None


def test_quality_of_a_binary_critic_and_of_no_labels():
    rows = [_row("failed", 0, 0.2), _row("runtime_error", 1, 0.6), _row("passed", 1, 0.9), _row("passed", 0, 0.4)]
    q = critic_quality(rows, n_classes=2)
    # classes: 0, 0, 1, 1 -> right: 1st and 3rd -> 2/4; majority 2/4.
    assert q["accuracy"] == 0.5 and q["majority_rate"] == 0.5
    # positives 0.9, 0.4 vs negatives 0.2, 0.6: 0.9 beats both (2), 0.4 beats 0.2 (1) -> 3/4.
    assert q["auc"] == 0.75
    assert critic_quality([_row("infra_error", 0, 0.5)], n_classes=2) is None


def test_summary_shows_accuracy_next_to_the_majority_rate_and_the_auc():
    from coderl_ray.summary import critic_lines

    held = {"programs": 900, "passed": 268, "accuracy": 0.586, "majority_rate": 0.702, "auc": 0.7149,
            "auc_within_problems": 0.6251, "mixed_problems": 40}
    state = {"stages": {
        "round_1/critic": {"wall_s": 1.0, "info": {}},
        "round_1/score": {"wall_s": 1.0, "info": {"heldout": held,
                                                  "train": {**held, "auc": None, "auc_within_problems": None}}},
        "round_2/score": {"wall_s": 1.0, "info": {"heldout_accuracy": 0.739, "train_accuracy": None}},
        "critic_binary": {"wall_s": 1.0, "info": {"heldout": {**held, "accuracy": 0.75}}},
    }}
    assert critic_lines(state) == [
        "",
        "critic: accuracy (majority-class rate), AUC of P(passed) over all programs / within each problem",
        "  round_1        held out 58.6% (70.2%) 0.71/0.63     samples 58.6% (70.2%) n/a/n/a",
        "  round_2        held out 73.9%                       samples n/a",  # a state.json from before AUCs
        "  critic_binary  held out 75.0% (70.2%) 0.71/0.63     samples n/a",
    ]
    assert critic_lines({"stages": {}}) == []
