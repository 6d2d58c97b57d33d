"""``MuscleTrainer``: a ``transformers.Trainer`` whose only change is the loss.

One copy of the new base serves both the new-model teacher and the student: the PEFT model holds
the student adapter (``default``, trainable, initialised from A2) and the teacher adapter
(``teacher_v2``, a frozen second copy of A2).  The teacher forward switches the active adapter
under ``torch.no_grad()`` in evaluation mode and restores the student adapter (and its
``requires_grad``) afterwards, so the teacher never receives gradients or optimizer state.  The
old-model teacher (base v1 + A1, merged, evaluation mode) is a separate module, or absent when
the teachers' top-k outputs come from a :class:`~muscle.training.cache.TeacherCache`.

Where the models support it (``logits_to_keep`` with a boolean mask, transformers ≥ 5), the
student and the teachers compute logits at the label positions only (``packed``): with the loss
on the answer, a long prompt then costs no ``(B, L, V)`` logits, their softmax or their gradient.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from muscle.errors import MuscleError
from muscle.logits import fit_width, logits_at, packed_logits, with_keep
from muscle.models import eval_mode
from muscle.training.losses import TopK, compat_loss, label_positions, needs_teachers

STUDENT = "default"
TEACHER_V2 = "teacher_v2"


@contextlib.contextmanager
def active_adapter(peft_model: Any, name: str) -> Iterator[None]:
    """Temporarily activate adapter ``name`` frozen (``inference_mode=True``); restore after."""
    previous = peft_model.active_adapter
    peft_model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        peft_model.set_adapter(previous)


def teacher_precision(device: torch.device, dtype: torch.dtype | None) -> Any:
    """Autocast to ``dtype`` for a teacher forward on ``device`` (no-op when ``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class NonFiniteLoss(MuscleError):
    """Training stopped on a NaN/inf loss."""


class MuscleTrainer(Trainer):
    """Trainer for task adapters (``mask="none"``) and compatibility adapters."""

    def __init__(
        self,
        *args: Any,
        mask: str = "none",
        loss_kwargs: dict[str, Any] | None = None,
        v1_model: torch.nn.Module | None = None,
        v1_width: int | None = None,
        v2_live: bool = False,
        teacher_autocast: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.mask = mask
        self.loss_kwargs = loss_kwargs or {}
        self.v1_model = v1_model
        self.v1_width = v1_width  # the student's output size (v1's may differ in padding rows)
        self.v2_live = v2_live  # run the v2 teacher adapter live (no cache)
        self.teacher_autocast = teacher_autocast
        # We normalise by the Trainer's label-token count over the accumulated, all-device batch.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self._metrics: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    # --- teachers ---------------------------------------------------------------------------
    def _v2_logits(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], keep: torch.Tensor
    ) -> torch.Tensor:
        peft_model = self.accelerator.unwrap_model(model)
        # DDP: call the unwrapped module (no gradient sync needed); FSDP/DeepSpeed shard
        # parameters, so their wrapper must run the forward.
        runner = model if self.is_fsdp_enabled or self.is_deepspeed_enabled else peft_model
        with (
            torch.no_grad(),
            eval_mode(runner),
            active_adapter(peft_model, TEACHER_V2),
            teacher_precision(self.args.device, self.teacher_autocast),
        ):
            return logits_at(peft_model, inputs, keep, runner)

    def _v1_logits(self, inputs: dict[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        assert self.v1_model is not None
        with torch.no_grad():
            logits = logits_at(self.v1_model, inputs, keep)
        return logits if self.v1_width is None else fit_width(logits, self.v1_width)

    def _teachers(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        cached: dict[str, Any],
        keep: torch.Tensor,
    ) -> tuple[Any, Any]:
        """Both teachers, packed at ``keep``'s positions (the label positions; a cached teacher
        comes packed from the collator)."""
        need_v1, need_v2 = needs_teachers(self.mask)
        v1 = v2 = None
        if need_v1:
            if "v1_logp" in cached:
                v1 = TopK(cached["v1_logp"], cached["v1_idx"], cached["v1_logz"])
            elif self.v1_model is not None:
                v1 = self._v1_logits(inputs, keep)
        if need_v2:
            if "v2_logp" in cached:
                v2 = TopK(cached["v2_logp"], cached["v2_idx"], cached["v2_logz"])
            elif self.v2_live:
                v2 = self._v2_logits(model, inputs, keep)
        return v1, v2

    # --- loss -----------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs.pop("index", None)
        cached = {k: inputs.pop(k) for k in list(inputs) if k.startswith(("v1_", "v2_"))}
        keep = label_positions(labels)
        v1, v2 = self._teachers(model, inputs, cached, keep)
        outputs = model(**with_keep(self.accelerator.unwrap_model(model), inputs, keep))
        out = compat_loss(
            packed_logits(outputs.logits, keep),
            labels,
            packed=True,
            v1=v1,
            v2=v2,
            mask=self.mask,
            num_items=num_items_in_batch,
            with_ce=not model.training,  # validation CE: the paper's best-epoch criterion
            **self.loss_kwargs,
        )
        loss = out.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        self._check_finite(loss)
        mode = "train" if model.training else "eval"
        for k, v in out.terms.items():
            self._metrics[mode][k].append(v)
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = torch.tensor(0.0 if torch.isfinite(loss).all() else 1.0, device=loss.device)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(bad)
        if bad.item() > 0:
            raise NonFiniteLoss(_stop_message(f"loss ({loss.item()})", self.args, self.state))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints keep the student only: the frozen teacher adapter is reloaded from A2."""
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir) / TEACHER_V2
        if self.args.should_save and folder.is_dir():
            import shutil

            shutil.rmtree(folder)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log (``aligned_v1`` = share of tokens
        aligned to the old model), averaged over processes, to the Trainer's logs: the best
        epoch and early stopping then see the same validation figures on every rank."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for k, vals in self._metrics[mode].items():
            if vals:
                mean = torch.stack(vals).float().mean()
                if self.accelerator.num_processes > 1:  # every rank logs at the same step
                    mean = self.accelerator.reduce(mean.to(self.args.device), reduction="mean")
                logs[f"{prefix}{k}"] = float(mean)
        self._metrics[mode].clear()
        super().log(logs, start_time)


def checkpoint_step(ckpt: Path) -> int:
    """N of a ``checkpoint-N`` folder (-1 for any other name)."""
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose ``trainer_state.json`` (written last) reads; an
    interrupted save leaves a newer one without it."""
    for ckpt in sorted(folder.glob("checkpoint-*"), key=checkpoint_step, reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return ckpt
    return None


def _stop_message(what: str, args: Any, state: Any) -> str:
    ckpt = last_complete_checkpoint(Path(args.output_dir))
    last = f"last good checkpoint: {ckpt}" if ckpt else "no checkpoint saved yet"
    return (
        f"non-finite {what} in optimizer step {state.global_step + 1} "
        f"(epoch {state.epoch or 0:.2f}); training stopped, {last}. "
        "Lower --learning-rate or check the data; --resume continues from that checkpoint"
    )


class FiniteGradCallback(TrainerCallback):
    """Stop before an optimizer step whose gradients hold NaN/inf (the loss can be finite while
    a gradient is not); the weights and the last checkpoint stay good."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        grads = [p.grad for p in kw["model"].parameters() if p.grad is not None]
        if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
            raise NonFiniteLoss(_stop_message("gradient", args, state))


def best_epoch_index(values: list[float], keep_last: bool = False) -> int | None:
    """The best of the epochs' validation ``values`` (lower is better): the first lowest finite
    one, so a tie is no improvement; with ``keep_last``, the last epoch.  ``None`` when there
    is none.  One rule for the adapter kept during training and the epoch reported after."""
    if keep_last:
        return len(values) - 1 if values else None
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    return min(finite, key=lambda i: values[i]) if finite else None


class BestEpochCallback(TrainerCallback):
    """After each evaluation, keep the student adapter of the epoch with the lowest
    ``metric`` (``eval_ce``: validation cross-entropy; ``eval_loss``: the training objective)
    in ``best_dir`` (written atomically, main process only); with ``keep_last``, that of the
    latest epoch instead.  With ``patience``, training stops once ``patience`` evaluations in a
    row have not improved ``metric`` (early stopping)."""

    def __init__(
        self,
        best_dir: str | Path,
        metric: str = "eval_ce",
        patience: int | None = None,
        keep_last: bool = False,
    ) -> None:
        self.best_dir = Path(best_dir)
        self.metric = metric
        self.patience = patience
        self.keep_last = keep_last

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any):
        key = self.metric
        if not metrics or key not in metrics:
            return
        # every process sees the same (reduced) metrics, so all stop together
        values = [
            h[key]
            for h in state.log_history[:-1]
            if key in h and h.get("step", -1) < state.global_step
        ]
        values.append(metrics[key])
        best = best_epoch_index(values)  # a tie is no improvement: count from the first best
        if self.patience and best is not None and len(values) - 1 - best >= self.patience:
            control.should_training_stop = True
        if not state.is_world_process_zero:
            return
        if best_epoch_index(values, self.keep_last) != len(values) - 1:  # this epoch is not it
            return
        model = kw["model"]
        tmp = self.best_dir.with_name(self.best_dir.name + ".tmp")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, selected_adapters=[STUDENT])
        shutil.rmtree(self.best_dir, ignore_errors=True)
        tmp.rename(self.best_dir)


class SaveAfterEpochEval(TrainerCallback):
    """A checkpoint due at an epoch's last step is saved after that epoch's validation.

    transformers saves at the step's end and validates at the epoch's end, after it: a run
    resumed from such a checkpoint starts past the epoch and never validated it, so its best
    epoch was chosen without it (and the kept adapter could disagree with the one reported)."""

    def __init__(self) -> None:
        self.pending = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # at an epoch's last step, state.epoch = epoch + steps / steps = a whole number; at
        # --max-steps mid-epoch, the loop stops and validates at the epoch's end all the same
        last = state.epoch is not None and float(state.epoch).is_integer()
        if control.should_save and (last or control.should_training_stop):
            control.should_save = False
            self.pending = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.pending:
            control.should_save = True  # after the evaluation, in the same call
            self.pending = False


class StepLimitCallback(TrainerCallback):
    """Raise after ``step`` optimizer steps (tests: simulate an interrupted run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"simulated interruption at step {state.global_step}")
