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


def _val_ce(epoch: dict[str, Any]) -> float | None:
    return epoch.get("val_ce", epoch.get("val_loss"))


def run_warnings(kind: str, mask: str | None, epochs: list[dict[str, Any]]) -> list[str]:
    """Warnings for a run of ``kind`` ("task" or "compat") from its ``training.json`` epochs.

    * task adapter: the validation CE was still falling over its last 3 epochs, so it may not
      have converged (a compatibility adapter started from it would gain from more training of
      any kind — compare it with the ``none`` control);
    * compatibility adapter with ``mask="student-wrong"`` (Eq. 1): under 1 % of the training
      tokens were aligned to v1 in the first epoch with a training log — the new task model
      already predicts (almost) every training label, so Eq. 1 has (almost) nothing to act on.
    """
    out = []
    if kind == "task":
        val = [v for v in (_val_ce(e) for e in epochs) if v is not None]
        if len(val) > 3 and min(val) == val[-1] and val[-1] < (1 - STILL_FALLING) * val[-4]:
            out.append(
                f"validation CE still fell by {100 * (1 - val[-1] / val[-4]):.1f} % over the "
                "last 3 epochs: the adapter may not have converged (train for more epochs)"
            )
    elif mask == "student-wrong":
        # the first epoch with a training log (a short epoch may have none)
        first = next((e for e in epochs if "train_aligned_v1" in e), None)
        if first is not None and first["train_aligned_v1"] < MIN_ALIGNED:
            out.append(
                f"only {100 * first['train_aligned_v1']:.2f} % of the training tokens were "
                f"aligned to the old model in epoch {first['epoch']}: the new task model already "
                "predicts (almost) every training label, so Eq. 1 has (almost) nothing to act on "
                "and the adapter stays close to it"
            )
    return out
