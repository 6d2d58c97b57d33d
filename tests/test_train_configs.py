"""The shipped accelerate presets parse with accelerate's own config loader."""

from __future__ import annotations

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
