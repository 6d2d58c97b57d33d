"""Run warnings (stored in training.json, printed by `muscle train`, used by the demo)."""

from __future__ import annotations

import pytest

from muscle.training.diagnostics import HIGH_LR, lr_at_stop, run_warnings


def _epochs(curve: list[float], key: str = "val_ce") -> list[dict]:
    return [{"epoch": i + 1, key: v} for i, v in enumerate(curve)]


def test_task_adapter_still_improving_is_flagged() -> None:
    levelled = [2.0, 1.0, 0.80, 0.70, 0.699, 0.698, 0.698]  # -0.3 % over the last 3 epochs
    falling = [2.0, 1.0, 0.80, 0.70, 0.65, 0.60, 0.56]  # -20 % over the last 3 epochs
    assert run_warnings("task", None, _epochs(levelled)) == []
    (msg,) = run_warnings("task", None, _epochs(falling))
    assert "still fell by 20.0 % over the last 3 epochs" in msg
    assert run_warnings("task", None, _epochs(falling, "val_loss")) == [msg]  # older logs
    assert run_warnings("task", None, _epochs(falling[:3])) == []  # too short to tell
    # falling but not at its best in the last epoch: it has turned, not flagged
    assert run_warnings("task", None, _epochs([*falling, 0.58])) == []
    # compatibility runs are short by design: no convergence warning
    assert run_warnings("compat", "student-wrong", _epochs(falling)) == []


def test_early_stop_at_a_high_learning_rate_is_flagged() -> None:
    # a linear schedule from 0.01 (no warm-up), logged every 10 of 100 planned steps
    history = [{"learning_rate": 0.01 * (1 - s / 100), "step": s} for s in range(10, 100, 10)]
    history.append({"eval_loss": 0.5, "epoch": 1.0})  # entries without a rate are skipped
    assert lr_at_stop(history[:3], 30, 100) == pytest.approx(0.7 / 0.9)
    assert lr_at_stop(history, 90, 100) == pytest.approx(0.1 / 0.9)
    assert lr_at_stop(history, 100, 100) is None  # the run ended as planned
    assert lr_at_stop([{"eval_loss": 1.0}], 3, 100) is None  # nothing logged
    # against the configured peak: the first-logged rate is not the peak
    assert lr_at_stop(history[:3], 30, 100, peak=0.01) == pytest.approx(0.7)
    # a stop during warm-up (rates still rising to 0.03) is at 2/3 of the peak, not 100 %
    warm = [{"learning_rate": 0.03 * s / 120, "step": s} for s in range(10, 90, 10)]
    assert lr_at_stop(warm, 80, 1200, peak=0.03) == pytest.approx(80 / 120)
    assert lr_at_stop(warm, 80, 1200) == pytest.approx(1.0)  # what the logged maximum says
    flat = _epochs([1.0, 0.9, 0.9, 0.9, 0.9])
    (msg,) = run_warnings("task", None, flat, stopped_lr=0.93)
    assert msg.startswith("early stopping ended the run with the learning rate at 93 % of its")
    assert run_warnings("task", None, flat, stopped_lr=HIGH_LR) == []
    assert run_warnings("task", None, flat, stopped_lr=None) == []
    assert run_warnings("compat", "none", flat, stopped_lr=0.93) == []  # task adapters only


def test_a_jump_of_the_validation_ce_is_flagged() -> None:
    # the habit task's rank-64 MUSCLE run at lr 3e-3 (seed 0): best at epoch 2, then a jump
    jumped = [0.809, 0.806, 2.252, 1.357, 1.166, 1.099]
    overfit = [0.86, 0.87, 0.95, 1.05, 1.12, 1.5]  # rises by up to x1.34 per epoch: no jump
    for kind, mask in (("compat", "student-wrong"), ("compat", "none"), ("task", None)):
        (msg,) = run_warnings(kind, mask, _epochs(jumped))
        assert msg.startswith("validation CE jumped from 0.806 to 2.252 at epoch 3:")
        assert run_warnings(kind, mask, _epochs(overfit)) == []
    # the larger of two jumps is named; exactly twice the previous epoch's is not a jump
    (msg,) = run_warnings("compat", "none", _epochs([1.0, 2.5, 1.0, 3.0]))
    assert "from 1.000 to 3.000 at epoch 4" in msg
    assert run_warnings("compat", "none", _epochs([1.0, 2.0])) == []
    # a CE near zero doubles by noise: the rise must exceed 0.1 too
    assert run_warnings("compat", "none", _epochs([0.009, 0.018])) == []
    assert run_warnings("compat", "none", _epochs([0.09, 0.2]))[0].startswith("validation CE")


@pytest.mark.parametrize(
    ("mask", "aligned", "flagged"),
    [
        ("student-wrong", 0.0, True),
        ("student-wrong", 0.0099, True),
        ("student-wrong", 0.01, False),
        ("student-wrong", 0.3, False),
        ("old-correct", 0.0, False),  # another mask: "aligned" means something else
        ("student-wrong", None, False),  # not logged in epoch 1: epoch 2's 50 % counts
    ],
)
def test_muscle_run_with_nothing_to_align_is_flagged(mask, aligned, flagged) -> None:
    first = {"epoch": 1, "val_ce": 1.0}
    if aligned is not None:
        first["train_aligned_v1"] = aligned
    later = {"epoch": 2, "val_ce": 0.9, "train_aligned_v1": 0.5}  # only the first counts
    found = run_warnings("compat", mask, [first, later])
    assert bool(found) is flagged
    if flagged:
        shown = "none" if aligned == 0 else f"only {100 * aligned:.2f} %"
        assert found[0].startswith(f"{shown} of the training tokens")
        assert "in epoch 1:" in found[0]


def test_first_epoch_with_a_training_log_counts() -> None:
    # epoch 1 had no log entry (fewer steps than --logging-steps): epoch 2's figure is used
    epochs = [{"epoch": 1, "val_ce": 1.0}, {"epoch": 2, "val_ce": 0.9, "train_aligned_v1": 0.0}]
    (msg,) = run_warnings("compat", "student-wrong", epochs)
    assert "in epoch 2:" in msg
    epochs[1]["train_aligned_v1"] = 0.2
    assert run_warnings("compat", "student-wrong", epochs) == []


def test_cli_prints_each_warning(capsys) -> None:
    from muscle.cli import _train_summary

    res = {
        "kind": "compat",
        "total_steps": 4,
        "best_epoch": 1,
        "epochs": [{"epoch": 1, "val_ce": 0.5, "val_loss": 0.1}],
        "config": {"output_dir": "out"},
        "warnings": ["first thing", "second thing"],
    }
    _train_summary(res)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal's width
    assert err.startswith("done: compat adapter, 4 steps, best epoch 1, val CE 0.5000")
    assert err.endswith("-> out warning: first thing warning: second thing")
