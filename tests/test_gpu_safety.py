"""Code paths that decide where and in what precision models run; what can be checked without a GPU is checked here."""

import pytest
import torch

from coderl_ray.models.device import autocast, choose_device, inference_device, ray_assigned_gpu_ids


# --- device: what Ray assigned, not what the node has --------------------------------------------------------------


def test_a_worker_given_no_gpu_runs_on_cpu_even_when_cuda_is_there():
    # The bug: an actor started with num_gpus=0 on a GPU node saw cuda available and took GPU 0.
    assert choose_device([], cuda_available=True) == torch.device("cpu")
    assert choose_device([], cuda_available=False) == torch.device("cpu")


def test_outside_ray_the_first_gpu_is_used_when_there_is_one():
    assert choose_device(None, cuda_available=True) == torch.device("cuda", 0)
    assert choose_device(None, cuda_available=False) == torch.device("cpu")


def test_an_assigned_gpu_is_the_first_visible_device():
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so physical GPU 3 is cuda:0 in the worker...
    assert choose_device(["3"], cuda_available=True, cuda_visible_devices="3") == torch.device("cuda", 0)
    assert choose_device([1, 2], cuda_available=True, cuda_visible_devices="1,2") == torch.device("cuda", 0)
    # ... unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES left every GPU visible: then the id is the index.
    assert choose_device(["3"], cuda_available=True, cuda_visible_devices=None) == torch.device("cuda", 3)


def test_an_assigned_gpu_without_cuda_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(RuntimeError, match=r"assigned GPU\(s\) \['0'\].*no CUDA"):
        choose_device(["0"], cuda_available=False, cuda_visible_devices="0")


def test_ray_workers_without_a_gpu_get_the_cpu(ray_cluster):
    import ray

    @ray.remote(num_gpus=0, num_cpus=0.1)
    class Probe:
        def where(self):
            return ray_assigned_gpu_ids(), str(inference_device())

    @ray.remote(num_gpus=0, num_cpus=0.1)
    def task():
        return ray_assigned_gpu_ids(), str(inference_device())

    probe = Probe.remote()
    assert ray.get(probe.where.remote()) == ([], "cpu")
    assert ray.get(task.remote()) == ([], "cpu")
    ray.kill(probe)
    assert ray_assigned_gpu_ids() is None  # the driver is not a worker: nothing was assigned to it


def test_autocast_is_the_training_rule():
    # CPU always computes in fp32 (the config refuses bf16 without a GPU); bf16 autocasts on GPU only.
    x = torch.randn(2, 3)
    with autocast("cpu", "bf16"):
        assert (x @ x.T).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp16")
