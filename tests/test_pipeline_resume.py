"""Resuming an output folder: which config changes a rerun may carry, and which make it a different run."""

import json

import pytest

from coderl_ray.config import ConfigError, load_config, save_config
from coderl_ray.pipeline import check_resume
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"


def _finished_run(out, stages):
    out.mkdir()
    save_config(load_config(TINY, [f"output_dir={out}"]), out / "config.yaml")
    (out / "state.json").write_text(json.dumps({"stages": {name: {"wall_s": 1.0, "info": {}} for name in stages}}))


def test_switching_the_loop_on_a_folder_with_finished_rounds_is_an_error_that_names_folder_key_and_way_out(tmp_path):
    # The README's order: `make demo`, then `make demo ARGS=rl.loop=online` on the same outputs/tiny.
    out = tmp_path / "tiny"
    _finished_run(out, ["data", "init", "sft", "round_1/rollout", "round_1/critic"])
    with pytest.raises(ConfigError) as err:
        check_resume(load_config(TINY, [f"output_dir={out}", "rl.loop=online"]), out, fresh=False)
    msg = str(err.value)
    assert str(out) in msg and "rl.loop" in msg and "round_1/rollout" in msg
    assert "output_dir=" in msg and "--fresh" in msg
    assert json.loads((out / "state.json").read_text())["stages"]  # nothing was lost
    with pytest.raises(ConfigError, match="rl.algorithm"):
        check_resume(load_config(TINY, [f"output_dir={out}", "rl.algorithm=grpo"]), out, fresh=False)


def test_changes_that_keep_the_run_coherent_resume_with_a_warning(tmp_path, capsys):
    out = tmp_path / "tiny"
    _finished_run(out, ["data", "init", "sft", "round_1/rollout"])
    check_resume(load_config(TINY, [f"output_dir={out}", "rl.rounds=3"]), out, fresh=False)  # one more round
    assert "changed config keys: rl.rounds" in capsys.readouterr().out
    # Before any round has run, the loop may still change (e.g. after SFT crashed).
    early = tmp_path / "early"
    _finished_run(early, ["data", "init", "sft"])
    check_resume(load_config(TINY, [f"output_dir={early}", "rl.loop=online"]), early, fresh=False)
    # --fresh starts over whatever the folder holds.
    check_resume(load_config(TINY, [f"output_dir={out}", "rl.loop=online"]), out, fresh=True)
    assert not (out / "state.json").exists()
