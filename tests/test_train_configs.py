"""The shipped accelerate presets parse with accelerate's own config loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {
    "ddp.yaml": "MULTI_GPU",
    "ddp_multinode.yaml": "MULTI_GPU",
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
    if name == "ddp_multinode.yaml":
        assert cfg.num_machines == 2 and cfg.main_process_ip and cfg.main_process_port


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


@pytest.mark.parametrize("command", ["task", "compat"])
def test_every_config_field_names_its_cli_option_or_none(command: str) -> None:
    """Messages name a field by its ``muscle train`` option: one the command has (``--out
    (output_dir)``), or the bare field name for the Python-only ones."""
    import typer

    from muscle.cli import app
    from muscle.training import CompatTrainingConfig, TaskTrainingConfig
    from muscle.training.config import _PYTHON_ONLY, _flag

    train = typer.main.get_command(app).commands["train"]
    options = {o for p in train.commands[command].params for o in p.opts}
    cfg = TaskTrainingConfig if command == "task" else CompatTrainingConfig
    for field in dataclasses.fields(cfg):
        flag = _flag(field.name).split()[0]
        if field.name in _PYTHON_ONLY:
            assert flag == field.name and "--" + field.name.replace("_", "-") not in options
        else:
            assert flag in options, (field.name, flag)


def test_wrong_types_and_values_are_one_clear_error() -> None:
    """Python users (and YAML files: PyYAML reads ``1e-3`` as a string) get one line naming the
    option, not a TypeError from deep inside; paths may be ``pathlib.Path``."""
    from pathlib import Path

    from muscle.errors import MuscleError
    from muscle.training import CompatTrainingConfig, TaskTrainingConfig

    base = TaskTrainingConfig(model=Path("m"), task=Path("spec.yaml"), output_dir=Path("o"))
    base.validate()
    assert (base.model, base.task, base.output_dir) == ("m", "spec.yaml", "o")
    home = TaskTrainingConfig(model="~/m", task="t", output_dir=Path("~/o"), data="~/d")
    assert (home.model, home.output_dir, home.data) == tuple(
        str(Path.home() / x) for x in ("m", "o", "d")
    )
    bad_types = [
        ("learning_rate", "1e-3", r"--learning-rate must be a number, got '1e-3' \(str\)"),
        ("lora_r", "8", r"--lora-r must be int, got '8' \(str\)"),
        ("num_train_epochs", 2.5, r"--epochs \(num_train_epochs\) must be int, got 2.5"),
        ("seed", True, r"--seed must be int, got True \(bool\)"),
        ("limit", "10", r"--limit must be int or None"),
        ("resume", 1, r"--resume must be bool, got 1 \(int\)"),
        ("target_modules", 3, r"--target-modules must be str or list\[str\]"),
        ("target_modules", [1, 2], r"--target-modules must be a list of names \(str\)"),
    ]
    for field, value, message in bad_types:
        with pytest.raises(MuscleError, match=message):
            dataclasses.replace(base, **{field: value}).validate()
    dataclasses.replace(base, learning_rate=1, warmup_ratio=0).validate()  # ints are numbers
    bad_values = [
        ({"lora_alpha": 0}, "--lora-alpha must be > 0"),
        ({"lora_dropout": 1.0}, "--lora-dropout must be in"),
        ({"weight_decay": -1.0}, "--weight-decay must be >= 0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 0"),
        ({"save_total_limit": 0}, "--save-total-limit must be >= 1"),
        ({"warmup_steps": -1}, "--warmup-steps must be >= 0"),
        ({"max_warmup_fraction": 5.0}, "max_warmup_fraction must be in"),
        ({"early_stopping_patience": 2, "val_fraction": 0.0}, "no validation split"),
    ]
    for change, message in bad_values:
        with pytest.raises(MuscleError, match=message):
            dataclasses.replace(base, **change).validate()
    compat = CompatTrainingConfig(
        old_model="a", new_model="b", new_adapter="c", task="t", output_dir="o"
    )
    with pytest.raises(MuscleError, match=r"--temperature must be a number, got '2'"):
        dataclasses.replace(compat, temperature="2").validate()
    with pytest.raises(MuscleError, match=r"--ce-weight must be a number or None"):
        dataclasses.replace(compat, ce_weight="0.5").validate()


def test_sweep_values_and_spec_tasks_round_trip(tmp_path: Path) -> None:
    """numpy scalars (a sweep grid's) and a tuple of target modules (as PEFT takes them) are
    accepted as int / float / list; a config with a spec ``Task`` object gives a dict that
    builds the same config again (it gave the task's name, which no registry knows)."""
    import numpy as np

    from muscle.tasks import get_task
    from muscle.training import TaskTrainingConfig

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: mine\noutput_type: multiple_choice\nprompt: '{q}'\nchoices_field: c\n"
        "label_field: l\ndata_files: {train: d.jsonl}\n"
    )
    cfg = TaskTrainingConfig(
        model="m", task=get_task(str(spec)), output_dir="o", num_train_epochs=np.int64(3),
        learning_rate=np.float32(1e-3), target_modules=("q_proj", "v_proj"),
    )  # fmt: skip
    cfg.validate()
    assert type(cfg.num_train_epochs) is int and cfg.num_train_epochs == 3
    assert type(cfg.learning_rate) is float and cfg.target_modules == ["q_proj", "v_proj"]
    d = cfg.to_dict()
    assert d["task"] == str(spec.resolve())
    again = TaskTrainingConfig(**d)
    again.validate()
    assert get_task(again.task).name == "mine" and again.to_dict() == d
