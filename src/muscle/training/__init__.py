"""Training: LoRA task adapters and MUSCLE compatibility adapters.

``TaskTrainingConfig`` / ``train_task_adapter`` and ``CompatTrainingConfig`` /
``train_compat_adapter`` (TRL style: a config dataclass and a function).  Importing this package
is cheap; torch and transformers load when a training function runs.
"""

from __future__ import annotations

from typing import Any

from muscle.training.config import MASKS, CompatTrainingConfig, TaskTrainingConfig


def train_task_adapter(cfg: TaskTrainingConfig, **kwargs: Any) -> dict:
    """Train a LoRA task adapter; returns the ``training.json`` content."""
    from muscle.training.api import train_task_adapter as run

    return run(cfg, **kwargs)


def train_compat_adapter(cfg: CompatTrainingConfig, **kwargs: Any) -> dict:
    """Train the MUSCLE compatibility adapter; returns the ``training.json`` content."""
    from muscle.training.api import train_compat_adapter as run

    return run(cfg, **kwargs)


__all__ = [
    "MASKS",
    "CompatTrainingConfig",
    "TaskTrainingConfig",
    "train_compat_adapter",
    "train_task_adapter",
]
