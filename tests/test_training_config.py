"""The training and rollout keys of the config: GPU configs load, invalid combinations say why, LoopConfig mapping."""

import pytest

from coderl_ray.config import ConfigError, load_config
from coderl_ray.train.loop import LoopConfig, train_options
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["small-gpu", "codet5-large"])
def test_gpu_configs_load_and_map_onto_the_loop(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.train.use_gpu and cfg.train.precision == "bf16" and cfg.rollout.decoder == "static"
    loop = LoopConfig(objective="sft", init_path="x", steps=1, batch_size=cfg.sft.batch_size, lr=cfg.sft.lr,
                      **train_options(cfg.train))
    assert (loop.parallel, loop.compile, loop.max_tokens_per_micro_batch) == \
        (cfg.train.parallel, cfg.train.compile, cfg.train.max_tokens_per_micro_batch)
    assert loop.log_dir == "auto"  # TensorBoard under the run folder


@pytest.mark.parametrize("override, message", [
    ("train.parallel=fsdp", "fsdp with train.num_workers=1 shards nothing"),
    ("train.precision=bf16", "autocasts on GPU only"),
    ("train.max_tokens_per_micro_batch=-1", "must be >= 0"),
    ("train.parallel=zero3", "must be one of"),
    ("rollout.compile=true", "needs rollout.decoder=static"),
])
def test_invalid_training_combinations_name_the_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "tiny.yaml", [override])


def test_loop_config_rejects_what_the_loop_cannot_run():
    with pytest.raises(ValueError, match="parallel must be ddp or fsdp"):
        LoopConfig(objective="sft", init_path="x", steps=1, batch_size=1, lr=1.0, parallel="zero")
    with pytest.raises(ValueError, match="steps"):
        LoopConfig(objective="sft", init_path="x", steps=0, batch_size=1, lr=1.0)
