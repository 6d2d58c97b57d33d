"""Can MUSCLE carry knowledge of M1 that no training label states?  A multiple-choice task with
several right answers per question.

Each person of a generated world has *three* pets, three favourite foods and three favourite
colours.  The corpora of bases v1 and v2 state an independently drawn 70 % / 80 % of those
(person, attribute, value) facts, so the two bases know different facts (a data update).  The task
(multiple choice by log-likelihood, as ``world-qa``):

* training asks each question ("What pet does Alice have?") twice in the same wording, once with
  each of two of her three values as the gold statement: an ambiguous label, as natural text
  admits several continuations, so even a converged M2 misses one of the two (Eq. 1 then distils
  from M1 there — whose distribution also carries what base v1 knows of the third value);
* the test asks, in a new wording, for the *third* value, which no training label names, against
  three values she does not have: only the bases know it.

M1 and M2 then flip where one base knows a fact the other does not.  `none` (CE on the two
trained values) cannot learn the third value; MUSCLE could, from M1's soft targets (the "ensemble
knowledge" the paper credits its gains to, §8).  ``--equal-bases`` gives v1 v2's size and
schedule, so that M1 is about as accurate as M2 (the regime of the paper's large reductions, §6.6).

    .venv/bin/python benchmarks/bench_several_values.py --seeds 0 1 2

Builds its own tokenizer and bases per seed (cached in ``--work``), then runs M1, M2, MUSCLE and
``none`` as the demo does: about 8 min per seed.  Finished runs are reused, so seeds can run
side by side.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from muscle.io import atomic_open, read_json, write_json, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_data import ms  # noqa: E402  (a sibling script: `mean ± std` cells)
from muscle.scenarios.bases import pretrain_base, train_tokenizer
from muscle.scenarios.demo import DEMO_VARIANTS, AdapterRecipe, run_task, task_row
from muscle.scenarios.scenario import (
    BASE_RECIPES,
    TASK_SPECS,
    VOCAB_SIZES,
    Scenario,
    ScenarioRecipe,
    torch_threads,
)
from muscle.scenarios.world import (
    COLORS,
    CORPUS_FACT,
    CORPUS_QA,
    FOODS,
    NAMES,
    PETS,
    QA_ANSWER,
    QA_TEST,
    QA_TRAIN,
)

TASK = "world-qa"
ATTRS = {"pet": PETS, "color": COLORS, "food": FOODS}
VALUES = 3  # per person and attribute
Rows = list[dict[str, Any]]


def make_world(seed: int, people: int = 60) -> dict[str, dict[str, list[str]]]:
    """Person -> attribute -> three distinct values (the first two are trained, the third
    tested)."""
    rng = random.Random(f"several-{seed}")
    names = rng.sample(NAMES, k=people)
    return {n: {a: rng.sample(vals, VALUES) for a, vals in ATTRS.items()} for n in names}


def corpus(world: dict[str, dict[str, list[str]]], seed: int, version: str) -> list[str]:
    """Facts (a share drawn per version, stated 6 times in varying wordings) and question-answer
    documents for about half of them."""
    share = {"v1": 0.7, "v2": 0.8}[version]
    keep = random.Random(f"several-{version}-facts-{seed}")
    rng = random.Random(f"several-corpus-{seed}-{version}")
    facts = [(n, a, v) for n in world for a in ATTRS for v in world[n][a] if keep.random() < share]
    docs = [rng.choice(CORPUS_FACT[a]).format(n=n, v=v) for _ in range(6) for n, a, v in facts]
    for _ in range(3):
        for n, a, v in facts:
            if rng.random() < 0.5:
                docs.append(f"Question: {CORPUS_QA[a].format(n=n)}\nAnswer: {v}")
    rng.shuffle(docs)
    return docs


def task_rows(world: dict[str, dict[str, list[str]]], seed: int) -> tuple[Rows, Rows]:
    """Training: each (person, attribute) twice, same wording, gold = value 1 then value 2.
    Test: the third value, in a test wording."""
    rng = random.Random(f"several-task-{seed}")
    train: Rows = []
    test: Rows = []

    def row(split: str, n: str, a: str, question: str, gold: str) -> dict[str, Any]:
        others = rng.sample([v for v in ATTRS[a] if v not in world[n][a]], 3)
        values = [*others, gold]
        rng.shuffle(values)
        rows = train if split == "train" else test
        return {
            "id": f"qa-{split}-{len(rows)}",
            "question": question,
            "choices": [QA_ANSWER[a].format(n=n, v=v) for v in values],
            "label": values.index(gold),
            "category": a,
        }

    for n in world:
        for a in ATTRS:
            q = rng.choice(QA_TRAIN[a]).format(n=n)
            for gold in world[n][a][:2]:
                train.append(row("train", n, a, q, gold))
            test.append(row("test", n, a, rng.choice(QA_TEST[a]).format(n=n), world[n][a][2]))
    rng.shuffle(train)
    return train, test


def build(seed: int, root: Path, equal_bases: bool = False) -> Scenario:
    """Tokenizer, both bases and the task files for ``seed`` in ``root`` (built once).
    ``equal_bases``: v1 gets v2's architecture and schedule (only the facts differ)."""
    recipe = ScenarioRecipe.preset("small", seed)
    if (root / "done.json").is_file():
        return Scenario(root, recipe)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    world = make_world(seed)
    corpora = {v: corpus(world, seed, v) for v in ("v1", "v2")}
    tok = train_tokenizer(corpora["v1"] + corpora["v2"], VOCAB_SIZES["small"], tmp / "tokenizer")
    logs = {}
    for i, v in enumerate(("v1", "v2")):
        base = BASE_RECIPES["small"][1 if equal_bases else i]
        logs[v] = pretrain_base(corpora[v], tok, base, tmp / "bases" / v, seed=seed * 100 + i)
    train, test = task_rows(world, seed)
    write_jsonl(tmp / "tasks" / TASK / "train.jsonl", train)
    write_jsonl(tmp / "tasks" / TASK / "test.jsonl", test)
    spec = {
        "name": TASK,
        "version": f"several-values-seed{seed}",
        **TASK_SPECS[TASK],
        "data_files": {"train": f"{TASK}/train.jsonl", "test": f"{TASK}/test.jsonl"},
        "default_split": "test",
    }
    (tmp / "tasks" / f"{TASK}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    write_json(tmp / "done.json", {k: {"final_loss": v["final_loss"]} for k, v in logs.items()})
    tmp.rename(root)
    return Scenario(root, recipe)


def knowledge(seed: int) -> dict[str, float]:
    """Share of the tested (third) values each corpus states, and of those one states and the
    other does not: the flips the bases' knowledge alone would make."""
    world = make_world(seed)
    stated = {}
    for v in ("v1", "v2"):
        docs = set(corpus(world, seed, v))
        stated[v] = {
            (n, a)
            for n in world
            for a in ATTRS
            if any(f.format(n=n, v=world[n][a][2]) in docs for f in CORPUS_FACT[a])
        }
    total = len(world) * len(ATTRS)
    return {
        "v1_knows": len(stated["v1"]) / total,
        "v2_knows": len(stated["v2"]) / total,
        "v1_not_v2": len(stated["v1"] - stated["v2"]) / total,
    }


def run_seed(seed: int, work: Path, equal_bases: bool) -> dict[str, Any]:
    done = work / "row.json"
    if done.is_file():
        return read_json(done)
    sc = build(seed, work / "scenario", equal_bases)
    res = run_task(sc, TASK, work / "run", AdapterRecipe(), seed, DEMO_VARIANTS, 64)
    row = task_row(res)
    row["m2_misfit"] = res["training"]["student-wrong"]["epochs"][0].get("train_aligned_v1")
    m2 = res["training"]["v2"]
    row["m2_epochs"] = (m2["best_epoch"], len(m2["epochs"]))
    row.update(knowledge(seed))
    write_json(done, row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--equal-bases",
        action="store_true",
        help="v1 with v2's size and schedule: only the facts differ (M1 about as good as M2)",
    )
    ap.add_argument("--work", default="runs/bench_several_values")
    ap.add_argument("--out", default="benchmarks/results/several_values.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = {}
    for seed in args.seeds:
        ts = time.perf_counter()
        name = f"seed{seed}" + ("-equal" if args.equal_bases else "")
        rows[seed] = run_seed(seed, Path(args.work) / name, args.equal_bases)
        print(f"[seed {seed}] {time.perf_counter() - ts:.0f} s", flush=True)
    rs = [rows[s] for s in sorted(rows)]

    def rel(r: dict[str, Any], key: str) -> float | None:
        return (r[key] - r["nfr_v2"]) / r["nfr_v2"] if r["nfr_v2"] else None

    seeds = " ".join(map(str, args.seeds))
    lines = [
        "# Several right answers: can MUSCLE carry M1's knowledge that no label states?",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_several_values.py --seeds {seeds}"
        + (" --equal-bases" if args.equal_bases else "")
        + f" --out {args.out}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s); this "
        f"invocation {(time.perf_counter() - t0) / 60:.1f} min (finished runs in --work are "
        "reused). Bases "
        + ("both of v2's size and schedule" if args.equal_bases else "the `small` preset's")
        + ", pre-trained here on corpora stating "
        "70 % (v1) / 80 % (v2) of the facts; demo recipe (`AdapterRecipe()`); 360 training "
        "items (each question twice, gold = value 1, then value 2), 180 test items (value 3).",
        "",
        "Points (%), mean ± std over seeds. *Corpus knows*: share of the tested values the "
        "base's corpus states; *v1 not v2*: stated for v1 only (flips the knowledge alone "
        "makes). *M2 misfit*: training answer tokens MUSCLE aligns to v1 in its first epoch.",
        "",
        "| acc v1 | acc v2 | corpus knows v1 / v2 | v1 not v2 | NFR v1→v2 | M2 misfit | "
        "NFR MUSCLE | NFR `none` | Δ%NFR MUSCLE | Δ%NFR `none` | Δacc MUSCLE | Δacc `none` | "
        "MUSCLE NFR < `none` |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {ms([r['acc_v1'] for r in rs], signed=False)} "
        f"| {ms([r['acc_v2'] for r in rs], signed=False)} "
        f"| {ms([r['v1_knows'] for r in rs], signed=False)} / "
        f"{ms([r['v2_knows'] for r in rs], signed=False)} "
        f"| {ms([r['v1_not_v2'] for r in rs], signed=False)} "
        f"| {ms([r['nfr_v2'] for r in rs], signed=False)} "
        f"| {ms([r['m2_misfit'] for r in rs], signed=False)} "
        f"| {ms([r['nfr_v2c'] for r in rs], signed=False)} "
        f"| {ms([r['nfr_none'] for r in rs], signed=False)} "
        f"| {ms([rel(r, 'nfr_v2c') for r in rs])} | {ms([rel(r, 'nfr_none') for r in rs])} "
        f"| {ms([r['acc_v2c'] - r['acc_v2'] for r in rs])} "
        f"| {ms([r['acc_none'] - r['acc_v2'] for r in rs])} "
        f"| {sum(r['nfr_v2c'] < r['nfr_none'] for r in rs)} of {len(rs)} |",
        "",
        "Per seed: acc v1 / v2 / MUSCLE / `none`; NFR v2 / MUSCLE / `none`; M2's best epoch:",
        "",
    ]
    for s, r in sorted(rows.items()):
        lines.append(
            f"- seed {s}: acc {100 * r['acc_v1']:.1f} / {100 * r['acc_v2']:.1f} / "
            f"{100 * r['acc_v2c']:.1f} / {100 * r['acc_none']:.1f}; NFR "
            f"{100 * r['nfr_v2']:.1f} / {100 * r['nfr_v2c']:.1f} / {100 * r['nfr_none']:.1f}; "
            f"M2 epoch {r['m2_epochs'][0]} of {r['m2_epochs'][1]}"
        )
    lines.append("")
    with atomic_open(args.out) as fh:
        fh.write("\n".join(lines))
    write_json(Path(args.out).with_suffix(".json"), {"rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    with torch_threads():  # $MUSCLE_THREADS or 1: the models are tiny
        main()
