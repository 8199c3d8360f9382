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
    assert [s.name for s in registry.STAGES] == ["data", "init", "eval", "sft", "critic_mutants", "rollout", "critic",
                                                 "score", "rl", "online", "critic_quality", "critic_binary", "repair",
                                                 "cs"]
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
    from coderl_ray.plan import model_shape

    cfg = load_config(ROOT / "configs" / "codet5-large.yaml", EVERYTHING)
    by_name = {e.stage: e for e in make_plan(cfg).stages}
    base, _ = model_shape("Salesforce/codet5-base")
    large, _ = model_shape("Salesforce/codet5-large-ntp-py")
    # The binary critic trains CodeT5-base like the round's critic, in a slot of its own beside the round's critic
    # (fp32 weights + gradients in DDP's buckets: 8 bytes per parameter); then the scorers, which hold the round's
    # critic too (fp32 weights: 4 bytes per parameter), score held-out programs as RL scoring does.
    assert by_name["critic_binary"].peak == by_name["critic"].peak + 8 * base.params
    assert by_name["critic_binary/heldout"].peak == by_name["score"].peak + 4 * base.params
    # The repair model is the actor (repair.init=actor) trained on 32-row batches, like SFT's, beside the actor.
    assert by_name["repair"].peak == by_name["sft"].peak + 8 * large.params
    # A critic sampling generator holds the repair model beside the actor: its weights are counted.
    cs = by_name["cs"]
    assert any(name.startswith("repair model: weights") for name, _ in cs.items)
    assert cs.workers.startswith("generators: 4 x {CPU: 4, GPU: 0.75} (actor + repair model)")
    scorers = by_name["cs/critic scorers"]
    assert scorers.workers == "critic scorers: 4 x {CPU: 2, GPU: 0.25} (critic_binary)" and scorers.fits
    assert scorers.notes[0].startswith("64 rows of 600 + 512 tokens (cs.critic_batch_size")
    assert scorers.peak == by_name["cs/critic scorers"].peak  # critic_batch_size 64 = score_batch_size 64
    # No old-log-probability pass in a pipeline: the generators record the behaviour log-probabilities.
    assert "rl/old_logprobs" not in by_name and by_name["rollout/behaviour logprobs"].role == "generator"


def test_the_roles_in_the_order_the_run_starts_them():
    tiny = ROOT / "configs" / "tiny.yaml"
    staged = registry.run_roles(load_config(tiny, EVERYTHING))
    # eval starts the generators and executors, sft the actor trainer, a round's critic stage the critic trainer,
    # its score stage the scorers.
    assert [p.key for p in staged] == ["generator", "sandbox", "actor_trainer", "critic_trainer", "scorer"]
    # Every model a role holds over the run: the repair model joins the actor, the binary critic the round's.
    models = {p.key: p.model for p in staged}
    assert models["generator"] == "actor + repair model" and models["actor_trainer"] == "actor + repair model"
    assert models["critic_trainer"] == "critic + critic_binary" and models["scorer"] == "critic + critic_binary"
    # The online loop reads its pools' numbers (starting the scorers) before it starts the critic trainer.
    online = registry.run_roles(load_config(tiny, ["rl.loop=online"]))
    assert [p.key for p in online] == ["generator", "sandbox", "actor_trainer", "scorer", "critic_trainer"]
    # Without rounds: evaluation and SFT only.
    none = registry.run_roles(load_config(tiny, ["rl.rounds=0", "cs.enabled=false"]))
    assert [p.key for p in none] == ["generator", "sandbox", "actor_trainer"]


def test_gpu_placement_by_hand():
    """Ray gives a fraction the GPU it fills most (best fit), a whole GPU only an empty one, in request order."""
    def on(placement):
        return [[label for label, _ in gpu] for gpu in placement.gpus]

    # Generators at 3/4 first, then scorers at 1/4: each scorer fills the hole a generator left.
    p = registry.place_gpus([("g", 0.75)] * 4 + [("s", 0.25)] * 4, 4)
    assert on(p) == [["g", "s"]] * 4 and p.blocked is None
    # The same shares the other way round: the scorers pile onto GPU 0 (each fills it most), three generators take
    # GPUs 1-3 and the fourth finds no 0.75 anywhere, although the shares sum to 4 GPUs exactly.
    p = registry.place_gpus([("s", 0.25)] * 4 + [("g", 0.75)] * 4, 4)
    assert on(p) == [["s"] * 4, ["g"], ["g"], ["g"]] and p.blocked == ("g", 0.75)
    # A whole GPU needs an empty one: two halves share GPU 0, the whole one takes GPU 1; a third half then fills
    # nothing.
    p = registry.place_gpus([("h", 0.5), ("h", 0.5), ("w", 1.0), ("h", 0.5)], 2)
    assert on(p) == [["h", "h"], ["w"]] and p.blocked == ("h", 0.5)
    # Ray counts in units of 1/10000: three 0.3 and a 0.1 fill one GPU exactly; in floats 1 - 0.3 - 0.3 - 0.3 is
    # just below 0.1 and the last one would not fit.
    assert registry.place_gpus([("a", 0.3)] * 3 + [("b", 0.1)], 1).blocked is None
    assert 1 - 0.3 - 0.3 - 0.3 < 0.1


# Ray with two logical GPUs (none needs to exist): actors asking for the shares one after the other, each placed
# before the next is asked for; prints the GPU ids Ray gave each.
_RAY_PLACES = """
import json, sys
import ray
shares = json.loads(sys.argv[1])
ray.init(address="local", num_cpus=1, num_gpus=2, include_dashboard=False, log_to_driver=False)
holder = ray.remote(num_cpus=0)(type("Holder", (), {"gpu": lambda self: [int(i) for i in ray.get_gpu_ids()]}))
held, ids = [], []
for share in shares:
    held.append(holder.options(num_gpus=share).remote())
    ids.append(ray.get(held[-1].gpu.remote()))
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_ray_places_gpu_fractions_as_the_plan_does():
    """The plan's model of Ray (registry.place_gpus) against Ray itself: 0.3, 0.3, 0.3 all go to GPU 0 (a spread
    would put the second on GPU 1), 0.5 to GPU 1, and the last 0.1 to GPU 0, which it fills exactly. ~20-50 s: a
    Ray of its own, in a subprocess (the tests' Ray has no GPUs)."""
    import subprocess
    import sys

    shares = [0.3, 0.3, 0.3, 0.5, 0.1]
    run = subprocess.run([sys.executable, "-c", _RAY_PLACES, json.dumps(shares)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ray_ids = json.loads(run.stdout.strip().splitlines()[-1])
    planned = registry.place_gpus([(str(i), s) for i, s in enumerate(shares)], 2)
    plan_ids = [[g for g, gpu in enumerate(planned.gpus) if any(label == str(i) for label, _ in gpu)]
                for i in range(len(shares))]
    assert ray_ids == plan_ids == [[0], [0], [0], [1], [0]]


def test_a_gpu_config_may_not_run_a_model_on_cpu_nor_overbook_its_gpus():
    config = ROOT / "configs" / "codet5-large.yaml"
    with pytest.raises(PlanError, match=r"runs models on CPU: critic scorers \(critic; cs\.critic_gpus_per_worker"):
        check_plan(load_config(config, ["cs.critic_gpus_per_worker=0"]), echo=lambda _: None)
    # Whole GPUs for the 4 generators: with 2 + 2 for the trainers all 8 are taken, and the first scorer finds none.
    with pytest.raises(PlanError, match=r"a worker of critic scorers finds no GPU with 0\.25 free .*wait forever"):
        check_plan(load_config(config, ["rollout.gpus_per_worker=1"]), echo=lambda _: None)
    # Without plan.cluster_gpus nothing is placed; a CPU config has no GPU to miss.
    check_plan(load_config(config, ["rollout.gpus_per_worker=1", "plan.cluster_gpus=0"]), echo=lambda _: None)
    assert make_plan(load_config(ROOT / "configs" / "tiny.yaml")).errors == []
    warned = []
    check_plan(load_config(config, ["cs.critic_gpus_per_worker=0", "plan.check=false"]), echo=warned.append)
    assert any("on CPU" in w for w in warned)


def test_the_per_stage_shares_of_one_gpu_would_wait_forever():
    """The old small-gpu layout: each stage alone fit one GPU (a whole GPU per trainer, 0.75 + 0.25 for a critic
    sampling pass), but the roles hold their shares all run long: 1 + 1 + 0.75 + 0.25 of one GPU."""
    cfg = load_config(ROOT / "configs" / "small-gpu.yaml", ["train.gpus_per_worker=1", "rollout.gpus_per_worker=0.75",
                                                            "cs.critic_gpus_per_worker=0.25"])
    with pytest.raises(PlanError, match=r"generators \(1 x 0\.75\), then actor trainer .* finds no GPU with 1 free"):
        check_plan(cfg, echo=lambda _: None)


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


def test_roles_ask_ray_for_the_registrys_pools():
    cfg = load_config(ROOT / "configs" / "small-gpu.yaml")
    assert registry.scorer_pool(cfg).ray_options() == {"num_cpus": 1, "num_gpus": 0.15}
    assert registry.sandbox_pool(cfg, resource="").ray_options() == {"num_cpus": 1, "num_gpus": 0.0}
    assert registry.sandbox_pool(cfg).ray_options()["resources"] == {"sandbox": 1.0}
    assert registry.sandbox_pool(cfg).describe() == \
        "sandbox executors: one per unit of 'sandbox' in the cluster x {CPU: 1, sandbox: 1}"
    # Ray Train takes a fraction of a GPU per worker (small-gpu: a quarter for each trainer).
    scaling = registry.trainer_pool(cfg, "critic").scaling_config()
    assert (scaling.num_workers, scaling.use_gpu, scaling.num_gpus_per_worker, scaling.num_cpus_per_worker) == \
        (1, True, 0.25, 2)
    cpu = registry.trainer_pool(load_config(ROOT / "configs" / "tiny.yaml"), "actor").scaling_config()
    assert (cpu.use_gpu, cpu.num_gpus_per_worker, cpu.num_cpus_per_worker) == (False, 0, 0.125)


def test_an_in_process_ray_advertises_room_for_every_role():
    from coderl_ray.roles.setup import local_cpus

    cfg = load_config(ROOT / "configs" / "small-gpu.yaml")
    # 2 trainers x 1 worker x 2 CPUs + a generator (1) + a scorer (1) + 16 executors (1 each) + Ray Data (1)
    assert local_cpus(cfg, 16) == 2 * 2 + 1 + 1 + 16 + 1
