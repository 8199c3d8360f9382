"""The pipeline's closing table and figure show critic sampling next to pass@k, from the ``cs`` stage's record."""

from coderl_ray.summary import format_table, write_summary


def _groups(one, five, any_):
    return {"all": {"problems": 4, "1@k": one, "5@k": five, "pass@k": any_},
            "introductory": {"problems": 2, "1@k": one / 2, "5@k": five, "pass@k": any_}}


STATE = {"stages": {
    "eval/round_2": {"wall_s": 10.0, "info": {"all": {"pass@1": 0.25, "pass@5": 0.5}}},
    "cs": {"wall_s": 30.0, "info": {
        "phase": "round_2", "budget": 10, "submissions": [1, 5], "repair": True, "critic": "critic_round_2",
        "no_example_problems": 1,
        "strategies": {"random": _groups(0.25, 0.5, 0.75), "filter": _groups(0.4, 0.5, 0.75),
                       "filter+critic": _groups(0.5, 0.5, 0.75), "cs": _groups(0.75, 0.75, 1.0)}}},
}}


def test_the_summary_table_has_a_row_per_strategy_at_equal_budget(tmp_path):
    table = format_table(STATE)
    assert "k = 10 programs per problem" in table
    lines = {line.split("  ")[0].strip(): line.split() for line in table.splitlines() if line.startswith("round_2 +")}
    # Columns: intro 1@k, all 1@k, all 5@k, all pass@k (in %).
    assert lines["round_2 + filter+critic"][-4:] == ["25.0", "50.0", "50.0", "75.0"]
    assert lines["round_2 + CS"][-4:] == ["37.5", "75.0", "75.0", "100.0"]
    assert set(lines) == {"round_2 + random pick", "round_2 + filter", "round_2 + filter+critic", "round_2 + CS"}
    assert "1 problems have no example tests" in table
    summary = write_summary(STATE, tmp_path)
    assert (tmp_path / "pass_at_1.png").stat().st_size > 1000 and "round_2 + CS" in summary["table"]


def test_without_critic_sampling_the_table_is_unchanged():
    state = {"stages": {k: v for k, v in STATE["stages"].items() if k != "cs"}}
    assert "critic sampling" not in format_table(state)
