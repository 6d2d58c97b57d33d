"""Your own model update, end to end, through the Python API: task adapters on the old and the
new base, evaluation, flips, a MUSCLE compatibility adapter, evaluation, flips again.

    python examples/own_update.py OUT_DIR                 # the built-in tiny scenario (offline)
    python examples/own_update.py OUT_DIR --old-model B1 --new-model B2 --task spec.yaml \\
        [--data PATH] [--train-split train] [--test-split test] [--epochs 3]

With no models given it builds the scenario's tiny bases (seconds; cached) and uses its
``world-qa`` task. ``--data`` is read for both splits: give a folder (or a spec whose
``data_files`` name both), not one file, or the models are tested on their training data.
The same steps on the command line:

    muscle train task --model B1 --task T --out OUT/a1
    muscle train task --model B2 --task T --out OUT/a2
    muscle eval --model B1 --adapter OUT/a1 --task T --split test --out OUT/v1.jsonl
    muscle eval --model B2 --adapter OUT/a2 --task T --split test --out OUT/v2.jsonl
    muscle train compat --old-model B1 --old-adapter OUT/a1 --new-model B2 \\
        --new-adapter OUT/a2 --task T --out OUT/c
    muscle eval --model B2 --adapter OUT/c --task T --split test --out OUT/v2c.jsonl
    muscle compare OUT/v1.jsonl OUT/v2.jsonl OUT/v2c.jsonl --name v1 --name v2 --name v2c \\
        --out OUT/report
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from muscle.compare import compare_files
from muscle.evaluation import evaluate_model
from muscle.training import (
    CompatTrainingConfig,
    TaskTrainingConfig,
    train_compat_adapter,
    train_task_adapter,
)


def run(
    out: Path,
    old_model: str,
    new_model: str,
    task: str,
    *,
    data: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    epochs: int = 3,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Every step of the update; returns the ``compat.json`` dict of v1 -> v2 and v1 -> v2C."""
    # Small-data settings: the paper's recipe (r 128, lr 1e-4, batch 4 x 8, 500 warm-up steps)
    # needs thousands of examples; every field can be set here as on the command line.
    recipe: dict[str, Any] = dict(
        task=task,
        data=data,
        split=train_split,
        num_train_epochs=epochs,
        learning_rate=3e-3,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=8,
        loss_on="answer",
        show_progress=show_progress,
    )
    for name, base in (("a1", old_model), ("a2", new_model)):
        if not (out / name / "training.json").is_file():
            train_task_adapter(
                TaskTrainingConfig(model=base, output_dir=str(out / name), lora_r=8,
                                   lora_alpha=16, **recipe)
            )  # fmt: skip
    if not (out / "c" / "training.json").is_file():
        train_compat_adapter(
            CompatTrainingConfig(
                old_model=old_model, old_adapter=str(out / "a1"),
                new_model=new_model, new_adapter=str(out / "a2"),
                output_dir=str(out / "c"), mask="student-wrong", **recipe,
            )
        )  # fmt: skip
    files = []
    for name, base, adapter in (
        ("v1", old_model, "a1"),
        ("v2", new_model, "a2"),
        ("v2c", new_model, "c"),
    ):
        path = out / f"{name}.jsonl"
        evaluate_model(
            base, adapter=str(out / adapter), task=task, data=data, split=test_split,
            out_path=path, resume=path.with_name(path.name + ".partial").exists(),
            show_progress=show_progress,
        )  # fmt: skip
        files.append(str(path))
    return compare_files(files, out / "report", names=["v1", "v2", "v2c"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--old-model")
    ap.add_argument("--new-model")
    ap.add_argument("--task")
    ap.add_argument("--data")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    old, new, task = args.old_model, args.new_model, args.task
    given = [o for o, v in (("--old-model", old), ("--new-model", new), ("--task", task)) if v]
    if given and len(given) < 3:
        ap.error("give --old-model, --new-model and --task together (or none: the tiny scenario)")
    if not given:
        from muscle.scenarios import build_scenario

        sc = build_scenario(seed=0, size="tiny")
        old, new, task = sc.base_v1, sc.base_v2, sc.task_spec("world-qa")
    compat = run(
        args.out, old, new, task, data=args.data, train_split=args.train_split,
        test_split=args.test_split, epochs=args.epochs,
    )  # fmt: skip
    for p in compat["pairs"]:
        score = p.get("accuracy_new", p.get("mean_score_new"))
        print(f"{p['old']} -> {p['new']}: accuracy {score:.3f}, NFR {p['nfr']:.3f}")
    print(f"report: {args.out / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
