"""The stage registry: every stage has its functions, plan estimate, command and job; the pipeline runs exactly the
registry's stages; the plan covers them on every shipped config; GPU configs neither score on CPU nor over-book
their GPUs. No Ray: reading the registry and planning are free."""

from __future__ import annotations

import ast
import importlib
import json
import re

import pytest

from coderl_ray import plan as plan_module
from coderl_ray import registry, stages
from coderl_ray.cli import COMMANDS, main
from coderl_ray.config import load_config
from coderl_ray.plan import PlanError, check_plan, make_plan
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "tests" / "configs" / "micro.yaml"]
# Every optional stage switched on, so the coverage test sees them all.
EVERYTHING = ["critic.inference_classes=2", "repair.enabled=true", "cs.enabled=true"]


def test_the_registry_lists_the_pipelines_stages_once_each():
    assert [s.name for s in registry.STAGES] == ["data", "init", "eval", "sft", "rollout", "critic", "score", "rl",
                                                 "online", "critic_binary", "repair", "cs"]
    # The rounds run staged (four stages each) or online (one stage for all of them), never both.
    staged, online = load_config(ROOT / "configs" / "tiny.yaml"), load_config(ROOT / "configs" / "tiny.yaml",
                                                                               ["rl.loop=online"])
    assert {"rollout", "rl"} <= {s.name for s in registry.pipeline_stages(staged)} and \
        "online" not in {s.name for s in registry.pipeline_stages(staged)}
    assert "online" in {s.name for s in registry.pipeline_stages(online)} and \
        not {"rollout", "critic", "score", "rl"} & {s.name for s in registry.pipeline_stages(online)}
    with pytest.raises(KeyError, match="no stage 'nope'.*stages: data, init"):
        registry.stage("nope")


@pytest.mark.parametrize("spec", registry.STAGES, ids=lambda s: s.name)
def test_every_stage_has_its_functions_plan_commands_and_jobs(spec):
    for fn in spec.functions:
        assert callable(getattr(stages, fn, None)), f"{spec.name}: coderl_ray.stages.{fn} does not exist"
    assert callable(getattr(plan_module, spec.plan, None)), f"{spec.name}: coderl_ray.plan.{spec.plan}"
    assert spec.commands and spec.jobs
    for command in spec.commands:
        assert command in COMMANDS, f"{spec.name}: no `coderl-ray {command}`"
        module = importlib.import_module(f"coderl_ray.commands.{COMMANDS[command][0]}")
        assert callable(module.add_arguments) and callable(module.run)
        assert f"coderl-ray {command}" in spec.usage
    # Each job file runs one of the stage's commands through the CLI.
    run = set()
    for job in spec.jobs:
        text = (ROOT / job).read_text()
        run |= set(re.findall(r'main\(\["([a-z-]+)"', text))
    assert run == set(spec.commands), (spec.name, run)


def _pipeline_calls() -> tuple[set[str], set[str]]:
    """(stage names, coderl_ray.stages functions) that coderl_ray/pipeline.py runs: the names given to
    ``log.run`` with their round / phase placeholders dropped ("{}/rollout" -> "rollout", "eval/{}" -> "eval")."""
    tree = ast.parse((ROOT / "coderl_ray" / "pipeline.py").read_text())
    names, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr == "run" and isinstance(target, ast.Name) and target.id == "log" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    text = arg.value
                elif isinstance(arg, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in arg.values)
                else:
                    continue  # a name passed through (the evaluation helper's f-string is found on its own)
                names.add("/".join(part for part in text.split("/") if part != "{}"))
            if isinstance(target, ast.Name) and target.id == "stages":
                functions.add(node.func.attr)
    return names, functions


def test_the_pipeline_runs_exactly_the_registrys_stages_and_functions():
    """Until coderl_ray/pipeline.py is driven by the registry itself, its source is held to it."""
    names, functions = _pipeline_calls()
    assert names == {s.name for s in registry.STAGES}
    assert functions == {fn for s in registry.STAGES for fn in s.functions}


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_the_plan_covers_every_stage_the_pipeline_runs(config):
    for overrides in ([], EVERYTHING):
        cfg = load_config(config, overrides)
        planned = [e.stage for e in make_plan(cfg).stages]
        for spec in registry.pipeline_stages(cfg):
            assert any(p == spec.name or p.startswith(spec.name + "/") for p in planned), (spec.name, planned)
        assert {s.name for s in registry.pipeline_stages(cfg)} >= (
            {"critic_binary", "repair", "cs"} if overrides else set())
    # and no stage is planned that the pipeline would not run
    cfg = load_config(config, ["rl.rounds=0", "critic.inference_classes=4", "repair.enabled=false"])
    assert {e.stage.split("/")[0] for e in make_plan(cfg).stages} == {"data", "init", "eval", "sft"}


def test_critic_sampling_repair_and_the_binary_critic_have_estimates():
    cfg = load_config(ROOT / "configs" / "codet5-large.yaml", EVERYTHING)
    by_name = {e.stage: e for e in make_plan(cfg).stages}
    # The binary critic trains CodeT5-base like the round's critic, then scores held-out programs as RL scoring.
    assert by_name["critic_binary"].peak == by_name["critic"].peak
    assert by_name["critic_binary/heldout"].peak == by_name["score"].peak
    # The repair model is the actor (repair.init=actor) trained on 32-row batches, like SFT's.
    assert by_name["repair"].peak == by_name["sft"].peak
    # A critic sampling generator holds the repair model beside the actor: its weights are counted.
    cs = by_name["cs"]
    assert any(name.startswith("repair model: weights") for name, _ in cs.items)
    assert cs.workers.startswith("generators: 8 x {CPU: 4, GPU: 0.75} (actor + repair model)")
    scorers = by_name["cs/critic scorers"]
    assert scorers.workers == "critic scorers: 8 x {CPU: 2, GPU: 0.25} (critic)" and scorers.fits
    assert scorers.notes[0].startswith("64 rows of 600 + 512 tokens (cs.critic_batch_size")


def test_gpu_packing_by_hand():
    # 8 generators at 3/4 and 8 scorers at 1/4: one of each per GPU.
    assert registry.pack_gpus([0.75] * 8 + [0.25] * 8, 8)
    # 8 whole GPUs and one quarter more: 9 GPUs' worth.
    assert not registry.pack_gpus([1.0] * 8 + [0.25], 8)
    # Three 0.6 shares sum to 1.8 but no two share a GPU: 3 GPUs needed.
    assert not registry.pack_gpus([0.6] * 3, 2) and registry.pack_gpus([0.6] * 3, 3)
    assert registry.pack_gpus([2.0, 0.5, 0.5], 3) and not registry.pack_gpus([2.0, 0.5, 0.75], 3)


def test_a_gpu_config_may_not_score_on_cpu_nor_overbook_its_gpus():
    config = ROOT / "configs" / "codet5-large.yaml"
    with pytest.raises(PlanError, match=r"runs model stages on CPU: cs \(critic scorers, cs\.critic_gpus_per_worker"):
        check_plan(load_config(config, ["cs.critic_gpus_per_worker=0"]), echo=lambda _: None)
    with pytest.raises(PlanError, match=r"cs: generators: 8 x \{CPU: 4, GPU: 1\}.*ask for 10 GPU"):
        check_plan(load_config(config, ["rollout.gpus_per_worker=1"]), echo=lambda _: None)
    # Without plan.cluster_gpus the packing is not checked; a CPU config has no GPU to miss.
    check_plan(load_config(config, ["rollout.gpus_per_worker=1", "plan.cluster_gpus=0"]), echo=lambda _: None)
    assert make_plan(load_config(ROOT / "configs" / "tiny.yaml")).errors == []
    warned = []
    check_plan(load_config(config, ["cs.critic_gpus_per_worker=0", "plan.check=false"]), echo=warned.append)
    assert any("on CPU" in w for w in warned)


def test_the_plan_command_exits_1_on_a_cpu_scorer(capsys):
    assert main(["plan", "--config", str(ROOT / "configs" / "small-gpu.yaml"), "cs.critic_gpus_per_worker=0"]) == 1
    assert "cs.critic_gpus_per_worker" in capsys.readouterr().err


def test_prepare_writes_the_data_and_init_stages_outputs(tmp_path, capsys):
    assert main(["prepare", "--config", str(ROOT / "tests" / "configs" / "micro.yaml"), "--out",
                 str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # micro.yaml: 24 training and 9 test problems of the embedded suite.
    assert (info["stage"], info["train_problems"], info["test_problems"]) == ("prepare", 24, 9)
    assert len((tmp_path / "data" / "train.jsonl").read_text().splitlines()) == 24
    assert (tmp_path / "models" / "actor_init" / "config.json").is_file()
    assert list((tmp_path / "data" / "ground_truth").glob("*.parquet"))


def test_pools_turn_into_what_ray_data_takes():
    cfg = load_config(ROOT / "configs" / "codet5-large.yaml")
    kwargs = registry.cs_scorer_pool(cfg).map_batches_kwargs()
    assert (kwargs["compute"].min_size, kwargs["compute"].max_size) == (8, 8)
    assert (kwargs["num_cpus"], kwargs["num_gpus"]) == (2, 0.25) and "resources" not in kwargs
    with pytest.raises(ValueError, match="sized from the cluster"):
        registry.sandbox_pool(cfg).map_batches_kwargs()
    assert registry.sandbox_pool(cfg).describe() == \
        "sandbox executors: one per unit of 'sandbox' in the cluster x {CPU: 1, sandbox: 1}"
