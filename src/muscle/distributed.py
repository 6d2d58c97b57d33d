"""Process state under ``torchrun`` / ``accelerate launch``, shared by evaluation and training."""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    """Processes of this run (torchrun / accelerate launch set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_state(device: str = "auto") -> Any:
    """accelerate's ``PartialState`` for a run on ``device``: MULTI_CPU (gloo) when it computes on
    the CPU, even on a machine with GPUs.  (A bare ``PartialState()`` under torchrun on the CPU
    sees one process, so its barriers and gathers do nothing.)"""
    from accelerate import PartialState

    from muscle.models import resolve_device

    return PartialState(cpu=resolve_device(device).type == "cpu")
