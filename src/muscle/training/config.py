"""Training configurations (TRL style: plain dataclasses, paper defaults, all overridable).

Paper defaults (MUSCLE, Sec. 4): LoRA r = 128, alpha = 256 on all linear layers, dropout 0,
learning rate 1e-4, gradient accumulation 8, 10 epochs, 500 warm-up steps, weight decay 0.

Warm-up: ``warmup_ratio`` (a fraction of all optimizer steps) when given; otherwise
``min(warmup_steps, ceil(max_warmup_fraction * total_steps))`` so that small data sets do not
spend the whole run warming up (500 steps when the run is longer than 5000 steps).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muscle.errors import MuscleError
from muscle.tasks.base import Task

REPORT_TO = ("none", "tensorboard", "wandb")
MASKS = (
    "student-wrong",
    "old-correct",
    "old-all",
    "token-likelihood",
    "sequence-likelihood",
    "focal",
    "ensemble",
    "none",
)

TOP_K = 64  # teacher log-probs kept per token by --cache-teachers


def top_k_without_cache(top_k: int) -> MuscleError:
    """The error for ``--top-k`` given without ``--cache-teachers`` (live teachers keep their
    whole distributions, so it would change nothing)."""
    return MuscleError(
        f"--top-k {top_k} sets the log-probs the teacher cache keeps; add --cache-teachers, "
        "or drop --top-k (live teachers use their full distributions)"
    )


# Fields that must be >= 1, and the CLI flags of fields whose names differ from them.
_POSITIVE = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "save_steps",
    "logging_steps",
)
_FLAGS = {
    "output_dir": "--out",
    "num_train_epochs": "--epochs",
    "per_device_train_batch_size": "--batch-size",
    "per_device_eval_batch_size": "--eval-batch-size",
    "gradient_accumulation_steps": "--grad-accum",
    "show_progress": "--progress",
}
# Fields that name files or folders.
_PATHS = ("model", "old_model", "new_model", "old_adapter", "new_adapter", "data", "output_dir")
_PYTHON_ONLY = ("max_warmup_fraction", "max_grad_norm")  # no CLI option


def _flag(field: str) -> str:
    """The ``muscle train`` option of a config field, with the field's name where they differ
    (the message serves CLI and Python users alike); the bare name for Python-only fields."""
    if field in _PYTHON_ONLY:
        return field
    flag = "--" + field.replace("_", "-")
    return f"{_FLAGS[field]} ({field})" if field in _FLAGS else flag


# The types a field's annotation names (annotations are strings here: PEP 563).
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
    "Task": (Task,),
    "list[str]": (list,),
}


def _check_type(field: dataclasses.Field, value: Any) -> None:
    """Refuse a value of the wrong type in one line: a YAML ``1e-3`` is a string, ``True`` is
    not a number."""
    kinds = [k.strip() for k in str(field.type).split("|")]
    allowed = tuple(t for k in kinds for t in _TYPES.get(k, (object,)))
    bool_as_number = isinstance(value, bool) and "bool" not in kinds
    if bool_as_number or not isinstance(value, allowed):
        want = " or ".join("a number" if k == "float" else k for k in kinds)
        raise MuscleError(
            f"{_flag(field.name)} must be {want}, got {value!r} ({type(value).__name__})"
        )
    if isinstance(value, float) and not math.isfinite(value):  # nan > 0 is False, too
        raise MuscleError(f"{_flag(field.name)} must be a finite number, got {value}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise MuscleError(f"{_flag(field.name)} must be a list of names (str), got {value!r}")


@dataclass
class _BaseTrainingConfig:
    task: str | Task = ""
    output_dir: str = ""
    data: str | None = None
    split: str = "train"
    limit: int | None = None
    learning_rate: float = 1e-4
    num_train_epochs: int = 10
    max_steps: int | None = None
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 8
    warmup_steps: int = 500
    warmup_ratio: float | None = None
    max_warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    val_fraction: float = 0.2
    # Stop once the validation CE has not improved for this many epochs (None: run all epochs).
    early_stopping_patience: int | None = None
    seed: int = 42
    loss_on: str = "all"
    max_length: int = 512
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    resume: bool = False
    report_to: str = "none"
    dtype: str = "auto"
    device: str = "auto"
    show_progress: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # paths may be given as pathlib.Path, or with "~"
            value = getattr(self, f.name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if f.name in _PATHS and isinstance(value, str) and value.startswith("~"):
                value = os.path.expanduser(value)
            # numpy scalars of a sweep grid, and a tuple of names as PEFT takes them
            if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
                value = int(value)
            elif isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
                value = float(value)
            elif isinstance(value, tuple) and "list" in str(f.type):
                value = list(value)
            setattr(self, f.name, value)

    def validate(self) -> None:
        """Raise :class:`MuscleError` for values a user can fix."""
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
        if not self.task:
            raise MuscleError("no task given; pass --task NAME or a task spec .yaml")
        if not self.output_dir:
            raise MuscleError("no output folder given; pass --out DIR")
        if self.loss_on not in ("all", "answer"):
            raise MuscleError(f"--loss-on {self.loss_on!r}: use 'all' or 'answer'")
        from muscle.models import resolve_device, resolve_dtype

        resolve_dtype(self.dtype, resolve_device(self.device))  # unknown or absent: one line
        if self.report_to not in REPORT_TO:
            raise MuscleError(f"--report-to {self.report_to!r}: use one of {', '.join(REPORT_TO)}")
        if not 0 <= self.seed < 2**32:
            raise MuscleError(f"--seed {self.seed}: must be in [0, 2**32 - 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise MuscleError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        for name in (*_POSITIVE, "limit", "max_steps", "per_device_eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MuscleError(f"{_flag(name)} must be >= 1, got {value}")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise MuscleError("--early-stopping-patience must be >= 1")
            if self.val_fraction == 0:
                raise MuscleError(
                    "--early-stopping-patience watches the validation CE: "
                    "--val-fraction 0 leaves no validation split"
                )
        if self.learning_rate <= 0:
            raise MuscleError("--learning-rate must be > 0")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise MuscleError("--warmup-ratio must be in [0, 1)")
        if self.warmup_steps < 0:
            raise MuscleError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.max_warmup_fraction <= 1.0:
            raise MuscleError("max_warmup_fraction must be in [0, 1]")
        if self.weight_decay < 0:
            raise MuscleError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm < 0:
            raise MuscleError("max_grad_norm must be >= 0 (0 turns clipping off)")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise MuscleError(
                "--save-total-limit must be >= 1 (in Python, save_total_limit=None keeps every "
                "checkpoint)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.task, Task):  # a spec task by its file, so the config loads again
            source = getattr(self.task, "source", None)
            d["task"] = str(Path(source).resolve()) if source else self.task.name
        return d


@dataclass
class TaskTrainingConfig(_BaseTrainingConfig):
    """``muscle train task``: a LoRA task adapter on ``model``."""

    model: str = ""
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def validate(self) -> None:
        super().validate()
        if not self.model:
            raise MuscleError("no base model given; pass --model PATH")
        if self.lora_r < 1:
            raise MuscleError("--lora-r must be >= 1")
        if self.lora_alpha <= 0:
            raise MuscleError("--lora-alpha must be > 0 (0 scales the adapter to nothing)")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise MuscleError("--lora-dropout must be in [0, 1)")


@dataclass
class CompatTrainingConfig(_BaseTrainingConfig):
    """``muscle train compat``: the MUSCLE compatibility adapter (a copy of ``new_adapter``)."""

    old_model: str = ""
    old_adapter: str | None = None
    new_model: str = ""
    new_adapter: str = ""
    mask: str = "student-wrong"
    temperature: float = 2.0
    ce_weight: float | None = None
    kl_t2_scale: bool = True
    focal_alpha: float = 1.0
    focal_beta: float = 5.0
    cache_teachers: bool = False
    top_k: int = TOP_K  # --cache-teachers only
    # Precision of the teachers' forward passes; None = the training dtype.  "bfloat16" keeps
    # the v1 base in bfloat16 (half its memory) and runs the v2 teacher under autocast, while
    # the student, its gradients and the loss stay in the training dtype.
    teacher_dtype: str | None = None
    # Best epoch by validation cross-entropy of the student (the paper's rule), by the
    # validation value of the training objective ("loss"), or the last epoch ("last").
    select_by: str = "ce"

    def validate(self) -> None:
        super().validate()
        if not self.new_model or not self.new_adapter:
            raise MuscleError("pass --new-model and --new-adapter (the new task model)")
        if self.mask not in MASKS:
            raise MuscleError(f"--mask {self.mask!r}: use one of {', '.join(MASKS)}")
        if self.mask != "none" and not self.old_model:
            raise MuscleError(f"--mask {self.mask} distils from the old model; pass --old-model")
        if self.mask == "ensemble" and self.cache_teachers:
            raise MuscleError(
                "--mask ensemble mixes the two teachers' full distributions: drop "
                "--cache-teachers (live teachers; --teacher-dtype bfloat16 halves their memory)"
            )
        if self.temperature <= 0:
            raise MuscleError("--temperature must be > 0")
        if self.ce_weight is not None:
            if self.mask in ("none", "focal"):
                raise MuscleError(
                    f"--ce-weight has no effect with --mask {self.mask} (it has its own CE term)"
                )
            if not 0.0 <= self.ce_weight <= 1.0:
                raise MuscleError("--ce-weight must be in [0, 1]")
        if self.top_k != TOP_K and not self.cache_teachers:
            raise top_k_without_cache(self.top_k)
        if self.top_k < 1:
            raise MuscleError("--top-k must be >= 1")
        if self.focal_alpha < 0 or self.focal_beta < 0:
            raise MuscleError("--focal-alpha and --focal-beta must be >= 0 (weights of the KL)")
        if self.select_by not in ("ce", "loss", "last"):
            raise MuscleError(f"--select-by {self.select_by!r}: use 'ce', 'loss' or 'last'")
        if self.teacher_dtype not in (None, "auto", "float32", "bfloat16", "float16"):
            raise MuscleError(
                f"--teacher-dtype {self.teacher_dtype!r}: use auto, float32, bfloat16 or float16"
            )
