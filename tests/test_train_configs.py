"""The shipped accelerate presets parse with accelerate's own config loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {
    "ddp.yaml": "MULTI_GPU",
    "fsdp.yaml": "FSDP",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_preset_loads(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(PRESETS / name))
    assert str(cfg.distributed_type).split(".")[-1] == EXPECTED[name]
    assert cfg.mixed_precision == "bf16" and cfg.num_processes >= 2
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-6])
    if name == "fsdp.yaml":
        assert cfg.fsdp_config["fsdp_version"] == 2


def test_training_presets_present_and_all_presets_parse() -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    found = {p.name for p in PRESETS.glob("*.yaml")}
    assert set(EXPECTED) <= found
    for name in found:  # presets of other commands too
        assert ClusterConfig.from_yaml_file(str(PRESETS / name)).num_processes >= 1


@pytest.mark.parametrize("command", ["task", "compat"])
def test_range_errors_name_the_real_cli_options(command: str) -> None:
    """Every count that must be >= 1 is refused with an option ``muscle train <command>`` has."""
    import typer

    from muscle.cli import app
    from muscle.errors import MuscleError
    from muscle.training import CompatTrainingConfig, TaskTrainingConfig
    from muscle.training.config import _POSITIVE

    train = typer.main.get_command(app).commands["train"]
    options = {o for p in train.commands[command].params for o in p.opts}
    if command == "task":
        base = TaskTrainingConfig(model="m", task="t", output_dir="o")
    else:
        base = CompatTrainingConfig(
            old_model="a", new_model="b", new_adapter="c", task="t", output_dir="o"
        )
    base.validate()
    fields = (*_POSITIVE, "limit", "max_steps", "per_device_eval_batch_size")
    for field in fields:
        for bad in (0, -1):
            with pytest.raises(MuscleError, match=f"must be >= 1, got {bad}") as err:
                dataclasses.replace(base, **{field: bad}).validate()
            flag = str(err.value).split()[0]
            assert flag in options, (field, flag)
