"""Why MUSCLE does (not) remove a flip: for every negative flip on the test split (M1 right, M2
wrong), look at the *training* items about the same fact and count how M1, M2 and the MUSCLE
adapter do on them.  The ``student-wrong`` mask can only act on training tokens the student gets
wrong, so a flip whose training items M2 already gets right carries no signal for MUSCLE.

Needs a finished ``bench_ablation.py`` run (``--work``, default ``runs/bench_ablation``):

    .venv/bin/python benchmarks/bench_ablation_diagnose.py --seed 0 --task world-math
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from muscle.evaluation import evaluate_model
from muscle.io import read_jsonl
from muscle.scenarios import build_scenario
from muscle.scenarios.scenario import torch_threads


def fact_key(task: str, doc: dict[str, Any]) -> tuple[str, ...]:
    """What a test item shares with training items: the addends, or the true statement."""
    if task == "world-math":
        return tuple(re.findall(r"\d+", doc["question"]))
    if task == "world-qa":
        return (doc["choices"][doc["label"]],)
    return (doc["summary"],)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="world-math", choices=["world-qa", "world-math"])
    ap.add_argument("--size", default="small")
    ap.add_argument("--work", default="runs/bench_ablation")
    args = ap.parse_args()
    sc = build_scenario(seed=args.seed, size=args.size)
    run = Path(args.work) / f"{args.size}-seed{args.seed}" / args.task
    models = {"M1": ("m_v1", sc.base_v1), "M2": ("m_v2", sc.base_v2)}
    models["MUSCLE"] = ("c_student-wrong", sc.base_v2)
    files = {"M1": "eval_v1.jsonl", "M2": "eval_v2.jsonl", "MUSCLE": "eval_student-wrong.jsonl"}
    train: dict[str, dict[str, Any]] = {}
    test: dict[str, dict[str, Any]] = {}
    with torch_threads():
        for name, (adapter, base) in models.items():
            out = run / f"diagnose_train_{adapter}.jsonl"
            if not out.is_file():
                evaluate_model(
                    base,
                    adapter=str(run / adapter),
                    task=sc.task_spec(args.task),
                    split="train",
                    out_path=out,
                    batch_size=64,
                    device="cpu",
                    dtype="float32",
                    show_progress=False,
                )
            train[name] = {r["id"]: r for _, r in read_jsonl(out)}
            test[name] = {r["id"]: r for _, r in read_jsonl(run / files[name])}
    task = sc.task(args.task)
    train_docs = {d["id"]: d for d in task.load_docs(None, "train")}
    test_docs = {d["id"]: d for d in task.load_docs(None, "test")}
    by_fact: dict[tuple[str, ...], list[str]] = {}
    for i, d in train_docs.items():
        by_fact.setdefault(fact_key(args.task, d), []).append(i)
    flips = [i for i in test["M1"] if test["M1"][i]["correct"] and not test["M2"][i]["correct"]]
    counts: Counter[str] = Counter()
    for i in flips:
        for j in by_fact.get(fact_key(args.task, test_docs[i]), []):
            tag = "".join(
                ("+" if train[m][j]["correct"] else "-") + m for m in ("M1", "M2", "MUSCLE")
            )
            counts[tag] += 1
    fixed = sum(test["MUSCLE"][i]["correct"] for i in flips)
    acc = {m: sum(r["correct"] for r in train[m].values()) / len(train[m]) for m in train}
    print(f"seed {args.seed}, {args.task}: {len(flips)} negative flips on the test split")
    print("training accuracy: " + ", ".join(f"{m} {100 * a:.1f}" for m, a in acc.items()))
    print("their training items (+ right, - wrong):")
    for tag, n in counts.most_common():
        print(f"  {tag}: {n}")
    print(f"flips that the MUSCLE adapter fixes on the test split: {fixed} of {len(flips)}")
    print(json.dumps({"flips": len(flips), "fixed": fixed, "train_items": dict(counts)}))


if __name__ == "__main__":
    main()
