"""End to end: MUSCLE (`student-wrong`) gives fewer negative flips against v1 than `none`.

Scenario: a yes/no table task.  The old task model (v1 + A1) learned the clean table.  The new
task model (v2 + A2) learned a table with three answers flipped, so it regresses on those keys.
The update's training data carries 30 % label noise.  Continuing A2 with cross-entropy only
(`none`, the vanilla update) follows the noise; the MUSCLE mask aligns the student with v1 where
it disagrees with the label, and with v2 elsewhere, and recovers v1's answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from muscle.models import load_tokenizer
from muscle.training import (
    CompatTrainingConfig,
    TaskTrainingConfig,
    train_compat_adapter,
    train_task_adapter,
)
from test_train_toys import ToyTask, load_adapted, make_model, one_thread, predict_choices


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _nfr(old: list[int], new: list[int], gold: list[int]) -> float:
    """Negative flip rate by a plain count: v1 right and the new model wrong."""
    return sum(o == g and n != g for o, n, g in zip(old, new, gold, strict=True)) / len(gold)


def test_student_wrong_has_lower_nfr_than_none(tmp_path: Path) -> None:
    b1 = make_model(tmp_path / "b1", seed=0)
    b2 = make_model(tmp_path / "b2", seed=1)
    gold = ToyTask(48, seed=3)
    shifted = ToyTask(48, seed=3)
    for d in shifted.docs:  # v2's task data: three keys answered the other way
        if d["a"] in {"w0", "w1", "w2"}:
            d["label"] = 1 - d["label"]
    noisy = ToyTask(48, seed=3)
    rng = random.Random(1)
    for d in noisy.docs:  # the update's training data: 30 % label noise
        if rng.random() < 0.3:
            d["label"] = 1 - d["label"]

    common = dict(
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        logging_steps=100,
        device="cpu",
        show_progress=False,
        val_fraction=0.0,
        loss_on="answer",
        seed=0,
    )
    lora = dict(lora_r=8, lora_alpha=16, num_train_epochs=10)
    a1, a2 = tmp_path / "a1", tmp_path / "a2"
    train_task_adapter(
        TaskTrainingConfig(model=str(b1), task=gold, output_dir=str(a1), **lora, **common)
    )
    train_task_adapter(
        TaskTrainingConfig(model=str(b2), task=shifted, output_dir=str(a2), **lora, **common)
    )
    tok = load_tokenizer(str(b1))
    labels = [d["label"] for d in gold.docs]
    p1 = predict_choices(load_adapted(b1, a1), tok, gold, gold.docs)
    p2 = predict_choices(load_adapted(b2, a2), tok, gold, gold.docs)
    assert sum(p == g for p, g in zip(p1, labels, strict=True)) / len(labels) > 0.9
    nfr_a2 = _nfr(p1, p2, labels)
    assert nfr_a2 > 0.2  # the update regresses

    nfr = {}
    for mask in ("none", "student-wrong"):
        out = tmp_path / mask
        train_compat_adapter(
            CompatTrainingConfig(
                old_model=str(b1),
                old_adapter=str(a1),
                new_model=str(b2),
                new_adapter=str(a2),
                task=noisy,
                output_dir=str(out),
                num_train_epochs=5,
                mask=mask,
                **common,
            )
        )
        pred = predict_choices(load_adapted(b2, out), tok, gold, gold.docs)
        nfr[mask] = _nfr(p1, pred, labels)
    print(
        f"NFR vs v1: A2 {nfr_a2:.3f}, none {nfr['none']:.3f}, "
        f"student-wrong {nfr['student-wrong']:.3f}"
    )
    assert nfr["student-wrong"] < nfr["none"], (nfr, nfr_a2)
    assert nfr["student-wrong"] < nfr_a2, (nfr, nfr_a2)
