"""The cluster files of cluster/: the launcher YAML against the schema Ray ships, the KubeRay manifests against the
fields KubeRay requires and the resource names the code requests, the image recipe and the local cluster script.
No cluster is started here."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coderl_ray.config import SandboxConfig
from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"
SANDBOX = SandboxConfig().resource


def _load(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


# --- Ray cluster launcher --------------------------------------------------------------------------------------


def test_launcher_yaml_validates_against_the_schema_ray_ships():
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    config = _load("aws.yaml")
    jsonschema.validate(config, json.loads(schema_path.read_text()))

    # Ray's own checks on top of the schema, after it has merged its AWS defaults, as `ray up` does.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_node_types_split_the_work():
    config = _load("aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    advertising = [name for name, t in types.items() if SANDBOX in t["resources"]]
    assert advertising == ["sandbox"], "only the sandbox node type may advertise the execution resource"
    sandbox = types["sandbox"]
    assert sandbox["resources"][SANDBOX] == sandbox["resources"]["CPU"]
    assert 1 <= sandbox["min_workers"] < sandbox["max_workers"]
    # The GPU type's GPUs are detected from its instance type; it must not be the head and must scale on its own.
    assert "g5" in types["gpu"]["node_config"]["InstanceType"] and types["gpu"]["max_workers"] >= 1
    assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]


# --- KubeRay ---------------------------------------------------------------------------------------------------

# Fields without `omitempty` in KubeRay's API types (ray-operator/apis/ray/v1/raycluster_types.go), i.e. what the
# operator rejects a RayCluster without, plus the container fields Kubernetes requires.
HEAD_REQUIRED = ("rayStartParams", "template")
WORKER_REQUIRED = ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template")


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _ray_start_resources(group: dict) -> dict:
    # KubeRay passes the value to `ray start --resources=<value>` through a shell: '"{\"sandbox\": 8}"'.
    raw = group["rayStartParams"].get("resources")
    return json.loads(raw.strip('"').replace('\\"', '"')) if raw else {}


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    for key in HEAD_REQUIRED:
        assert key in head, f"headGroupSpec.{key} is required"
    assert head["rayStartParams"]["num-cpus"] == "0", "the head must not take tasks"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for name, group in groups.items():
        for key in WORKER_REQUIRED:
            assert key in group, f"workerGroupSpecs[{name}].{key} is required"
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
    for group in [head, *groups.values()]:
        for c in _containers(group):
            assert c["name"] and c["image"]
            assert {"mountPath": "/mnt/shared", "name": "shared"} in c["volumeMounts"]

    assert set(groups) == {"gpu", "sandbox"}
    assert "nvidia.com/gpu" in _containers(groups["gpu"])[0]["resources"]["limits"]
    assert _ray_start_resources(groups["gpu"]) == {}
    sandbox = groups["sandbox"]
    limits = _containers(sandbox)[0]["resources"]["limits"]
    assert _ray_start_resources(sandbox) == {SANDBOX: int(limits["cpu"])}, "one execution slot per CPU"
    assert "nvidia.com/gpu" not in limits
    assert sandbox["maxReplicas"] > sandbox["minReplicas"] >= 1 and spec["enableInTreeAutoscaling"] is True


def test_kuberay_raycluster_has_the_required_fields_and_the_code_s_resource_names():
    cluster = _load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    _check_cluster_spec(cluster["spec"])


def test_kuberay_rayjob_runs_the_pipeline_on_the_same_cluster_spec():
    job = _load("kuberay/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].split()[:2] == ["python", "/app/jobs/pipeline.py"]
    assert "output_dir=/mnt/shared/" in spec["entrypoint"], "a retried job must find its finished stages"
    yaml.safe_load(spec["runtimeEnvYAML"])
    assert spec["rayClusterSpec"] == _load("kuberay/raycluster.yaml")["spec"]
    _check_cluster_spec(spec["rayClusterSpec"])
    assert _load("kuberay/shared-pvc.yaml")["spec"]["accessModes"] == ["ReadWriteMany"]


# --- image, runtime env, local script --------------------------------------------------------------------------


def test_dockerfile_installs_the_sandbox_tools_and_the_project():
    text = (CLUSTER / "Dockerfile").read_text()
    run_lines = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "bubblewrap" in run_lines and "util-linux" in run_lines
    assert "-c constraints.txt" in run_lines and "COPY jobs" in run_lines
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_runtime_env_keeps_local_state_out_of_the_upload():
    env = _load("runtime_env.yaml")
    assert {".venv/", "outputs/", ".git/"} <= set(env["excludes"])
    assert all(isinstance(v, str) for v in env["env_vars"].values()), "Ray requires string env_vars"


def test_local_cluster_script_parses_and_explains_itself():
    subprocess.run(["bash", "-n", str(CLUSTER / "local-cluster.sh")], check=True)
    usage = subprocess.run([str(CLUSTER / "local-cluster.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "start" in usage.stdout and "add-sandbox" in usage.stdout
    assert os.access(CLUSTER / "local-cluster.sh", os.X_OK)


@pytest.mark.parametrize("job", ["pipeline", "generate", "execute", "train_critic", "score", "train_actor",
                                 "evaluate", "critic_sample", "train_repair"])
def test_every_stage_job_shows_its_submit_line_and_runs_its_command(job):
    path = ROOT / "jobs" / f"{job}.py"
    doc = path.read_text()
    assert "ray job submit --working-dir . " in doc and f"python jobs/{job}.py" in doc
    help_ = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "usage: coderl-ray" in help_.stdout, help_.stderr[-2000:]


# --- the shipped GPU configs on these clusters -------------------------------------------------------------------


@pytest.mark.parametrize("config", ["small-gpu.yaml", "codet5-large.yaml"])
def test_the_roles_ray_puts_on_a_gpu_fit_a_kuberay_gpu_pod(config):
    """A KubeRay GPU pod is one GPU and a few CPUs: the roles Ray puts on a GPU (as `coderl-ray plan` places them)
    must ask for no more CPUs than the pod has, or a role waits forever for CPUs beside a free GPU share."""
    from coderl_ray import registry
    from coderl_ray.config import load_config

    pod = _containers(_load("kuberay/raycluster.yaml")["spec"]["workerGroupSpecs"][0])[0]["resources"]["limits"]
    assert pod["nvidia.com/gpu"] == "1"
    cfg = load_config(ROOT / "configs" / config)
    roles = registry.run_roles(cfg)
    placement = registry.place_gpus(registry.gpu_requests(roles), cfg.plan.cluster_gpus)
    assert placement.blocked is None
    cpus = {p.key: p.cpus for p in roles}
    for gpu in placement.gpus:
        assert sum(cpus[key] for key, _ in gpu) <= int(pod["cpu"]), (config, gpu)
