"""What a user should know about a finished training run, read from its per-epoch records.

``run_warnings`` is stored in ``training.json`` (``warnings``), printed by ``muscle train`` and
used by ``muscle demo``'s fairness checks.
"""

from __future__ import annotations

from typing import Any

# A task adapter "still improving": validation CE more than 2 % lower than three epochs before.
STILL_FALLING = 0.02
# A MUSCLE run "with nothing to act on": under 1 % of training tokens aligned to v1 in its
# first logged epoch.
MIN_ALIGNED = 0.01
# A run "stopped at a high learning rate": early stopping ended it with the learning rate above
# half its peak. Validation CE is noisy there: on the habit task with 1,600 items, M2 stopped
# at 93-95 % of its peak and `none` (trained on) then removed 49 % of its negative flips
# (benchmarks/results/habits_n1600/).
HIGH_LR = 0.5
# A run that "jumped": its validation CE more than doubled from one epoch to the next. Seen only
# at a high learning rate: the habit task's rank-64 compatibility run at 3e-3 went 0.81 -> 2.25
# at its 3rd epoch and never came back; at 1e-3 it stayed within 0.003 (habits_n1600/). And by
# more than 0.1 nats: a CE near zero doubles by noise (0.009 -> 0.018 on a memorised task).
JUMP = 2.0
MIN_JUMP = 0.1


def _val_ce(epoch: dict[str, Any]) -> float | None:
    return epoch.get("val_ce", epoch.get("val_loss"))


def lr_at_stop(
    history: list[dict[str, Any]], steps: int, planned: int, peak: float | None = None
) -> float | None:
    """The learning rate at the end of a run as a share of its ``peak`` (the configured rate;
    by default the highest logged, which a stop during warm-up never reached), if the run ended
    before its ``planned`` steps (early stopping); else ``None``."""
    lrs = [h["learning_rate"] for h in history if "learning_rate" in h]
    top = peak if peak is not None else max(lrs, default=0.0)
    if steps >= planned or not lrs or top <= 0:
        return None
    return lrs[-1] / top


def run_warnings(
    kind: str, mask: str | None, epochs: list[dict[str, Any]], stopped_lr: float | None = None
) -> list[str]:
    """Warnings for a run of ``kind`` ("task" or "compat") from its ``training.json`` epochs
    (and, with ``stopped_lr``, its learning rate at an early stop as a share of the peak).

    * task adapter: the validation CE was still falling over its last 3 epochs, so it may not
      have converged (a compatibility adapter started from it would gain from more training of
      any kind — compare it with the ``none`` control);
    * task adapter stopped early with the learning rate above half its peak: its best epoch
      may be an under-trained adapter picked from a noisy validation CE (the same check);
    * compatibility adapter with ``mask="student-wrong"`` (Eq. 1): under 1 % of the training
      tokens were aligned to v1 in the first epoch with a training log — the new task model
      already predicts (almost) every training label, so Eq. 1 has (almost) nothing to act on;
    * any run whose validation CE more than doubled (and rose by over 0.1) from one epoch to
      the next: the learning rate may be too high for it.
    """
    out = []
    val_ce = [(e["epoch"], v) for e in epochs if (v := _val_ce(e)) is not None]
    jumps = [
        (e, a, b)
        for (_, a), (e, b) in zip(val_ce, val_ce[1:], strict=False)
        if b > JUMP * a and b - a > MIN_JUMP
    ]
    if jumps:
        e, a, b = max(jumps, key=lambda j: j[2] / j[1])
        out.append(
            f"validation CE jumped from {a:.3f} to {b:.3f} at epoch {e}: the learning rate may "
            "be too high for this run (try a lower --learning-rate)"
        )
    if kind == "task":
        val = [v for _, v in val_ce]
        if len(val) > 3 and min(val) == val[-1] and val[-1] < (1 - STILL_FALLING) * val[-4]:
            out.append(
                f"validation CE still fell by {100 * (1 - val[-1] / val[-4]):.1f} % over the "
                "last 3 epochs: the adapter may not have converged (train for more epochs)"
            )
        if stopped_lr is not None and stopped_lr > HIGH_LR:
            out.append(
                f"early stopping ended the run with the learning rate at {100 * stopped_lr:.0f} "
                "% of its peak, where the validation CE is noisy: the best epoch may be "
                "under-trained (plan fewer epochs so the learning rate decays before the stop, "
                "or check that a `muscle train compat --mask none` run from it does not do "
                "clearly better)"
            )
    elif mask == "student-wrong":
        # the first epoch with a training log (a short epoch may have none)
        first = next((e for e in epochs if "train_aligned_v1" in e), None)
        if first is not None and first["train_aligned_v1"] < MIN_ALIGNED:
            share = first["train_aligned_v1"]
            shown = "none" if share == 0 else f"only {100 * share:.2f} %"
            out.append(
                f"{shown} of the training tokens were aligned to the old model in epoch "
                f"{first['epoch']}: the new task model already ranks the right token first at "
                "(almost) every training position, so Eq. 1 distils from the new task model "
                "(almost) everywhere and the compatibility adapter stays at (or next to) it; "
                "Eq. 1 needs training items the new task model gets wrong"
            )
    return out
