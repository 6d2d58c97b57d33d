"""Where can Eq. 1 act?  MUSCLE against `none` on variants of the scenario's multiple-choice task.

MUSCLE's ``student-wrong`` mask distils from M1 only on *training* tokens the student (initialised
from M2) gets wrong.  This benchmark keeps each seed's bases and changes only the ``world-qa`` task
data (or the task adapters' recipe), then runs the demo pipeline (M1, M2, MUSCLE, ``none``) on each
variant and reports, mean ± std over seeds: the accuracies, NFR(v1→v2), how much of M2's training
data it gets wrong (the share of training answer tokens MUSCLE aligns to v1 in its first epoch),
and the NFR and accuracy changes of MUSCLE and of ``none`` against M2.

Variants (all on the same people, facts and bases):

* ``shipped``: the task as built (each fact 1-2 times in training; test = same facts, new wordings).
* ``under-trained``: shipped data, task adapters stopped after 3 epochs (the trap in the issue).
* ``label-noise``: 15 % of the training labels replaced by a wrong choice.
* ``facts-once``: each fact exactly once in training, so the validation hold-out asks about facts
  the adapter never saw (test unchanged: training facts in new wordings).
* ``facts-disjoint``: test items ask only about facts that no training item asks about (knowledge
  only in the bases); 2 test wordings per fact.
* ``which-of-four``: "Which of A, B, C and D lives in Paris?" — choices are the four names: the
  four people's facts must be compared, and test items are new combinations of them.
* ``mixed-wording``: each of the four statements in an independently drawn corpus wording.
* ``story-endings``: each statement goes on with content drawn at random per ending ("…, and meets
  Bob on Friday."), as HellaSwag's endings differ in many words: the models' priors over those
  words (which differ between the bases) enter every choice's log-likelihood.
* ``story-disjoint``: ``facts-disjoint`` with story endings: the test facts are known only to the
  bases, so many test items are uncertain and the endings' priors decide them.

    .venv/bin/python benchmarks/bench_scenario_variants.py --seeds 0 1 2 \\
        --out benchmarks/results/scenario_variants.md

Finished runs in ``--work`` are reused, so seeds can run side by side (one ``--seeds`` each, a
different ``--out``) and a last invocation over all seeds only collects.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from muscle.io import atomic_open, write_json, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_data import ms  # noqa: E402  (a sibling script: `mean ± std` cells)
from muscle.scenarios import build_scenario
from muscle.scenarios.demo import DEMO_VARIANTS, AdapterRecipe, run_task, task_row
from muscle.scenarios.scenario import Scenario, torch_threads, write_task_files
from muscle.scenarios.world import (
    ATTRS,
    CORPUS_FACT,
    DAYS,
    QA_ANSWER,
    QA_TEST,
    QA_TRAIN,
    World,
)

Rows = list[dict[str, Any]]
TASK = "world-qa"


def _qa_rows(world: World, split: str, facts: list[tuple[str, str]], wordings: int) -> Rows:
    """Multiple-choice rows (as ``World.qa_items``) for the given facts, ``wordings`` each."""
    rng = random.Random(f"variant-qa-{world.seed}-{split}")
    templates = QA_TRAIN if split == "train" else QA_TEST
    rows = []
    for n, a in facts:
        for template in rng.sample(templates[a], wordings):
            gold = world.people[n][a]
            values = [*rng.sample([v for v in ATTRS[a] if v != gold], 3), gold]
            rng.shuffle(values)
            rows.append(
                {
                    "id": f"qa-{split}-{len(rows)}",
                    "question": template.format(n=n),
                    "choices": [QA_ANSWER[a].format(n=n, v=v) for v in values],
                    "label": values.index(gold),
                    "category": a,
                }
            )
    return rows


def shipped(world: World) -> tuple[Rows, Rows]:
    return world.qa_items("train"), world.qa_items("test")


def label_noise(world: World, share: float = 0.15) -> tuple[Rows, Rows]:
    rng = random.Random(f"variant-noise-{world.seed}")
    train = world.qa_items("train")
    for r in train:
        if rng.random() < share:
            r["label"] = rng.choice([i for i in range(len(r["choices"])) if i != r["label"]])
    return train, world.qa_items("test")


def facts_once(world: World) -> tuple[Rows, Rows]:
    n_facts = len(world.people) * len(ATTRS)
    once = World(world.seed, dataclasses.replace(world.size, qa_train=n_facts), world.people)
    return once.qa_items("train"), world.qa_items("test")


def facts_disjoint(world: World) -> tuple[Rows, Rows]:
    facts = [(n, a) for n in world.people for a in ATTRS]
    random.Random(f"variant-split-{world.seed}").shuffle(facts)
    cut = 2 * len(facts) // 3
    return _qa_rows(world, "train", facts[:cut], 1), _qa_rows(world, "test", facts[cut:], 2)


WHICH_TRAIN = {
    "city": "Which of {l} lives in {v}?",
    "pet": "Which of {l} has a pet {v}?",
    "job": "Which of {l} works as a {v}?",
    "color": "Which of {l} likes the color {v}?",
    "food": "Which of {l} likes to eat {v}?",
}
WHICH_TEST = {
    "city": "{l}: whose home is in {v}?",
    "pet": "{l}: who owns a {v}?",
    "job": "{l}: who is a {v} by trade?",
    "color": "{l}: whose favorite color is {v}?",
    "food": "{l}: whose favorite food is {v}?",
}


def which_of_four(world: World) -> tuple[Rows, Rows]:
    def rows(split: str, count: int, templates: dict[str, str]) -> Rows:
        rng = random.Random(f"variant-which-{world.seed}-{split}")
        out: Rows = []
        while len(out) < count:
            a = rng.choice(list(ATTRS))
            n = rng.choice(list(world.people))
            v = world.people[n][a]
            others = [m for m in world.people if world.people[m][a] != v]
            names = [*rng.sample(others, 3), n]
            rng.shuffle(names)
            listed = ", ".join(names[:-1]) + " and " + names[-1]
            out.append(
                {
                    "id": f"which-{split}-{len(out)}",
                    "question": templates[a].format(l=listed, v=v),
                    "choices": names,
                    "label": names.index(n),
                    "category": a,
                }
            )
        return out

    size = world.size
    return rows("train", size.qa_train, WHICH_TRAIN), rows("test", size.qa_test, WHICH_TEST)


def _story(world: World, rows: Rows, split: str) -> Rows:
    """Each statement goes on with a meeting drawn at random per ending."""
    rng = random.Random(f"variant-story-{world.seed}-{split}")
    for r in rows:
        person = r["choices"][0].split(" ")[0]
        mates = [m for m in world.people if m != person]
        r["choices"] = [
            f"{c.rstrip('.')}, and meets {rng.choice(mates)} on {rng.choice(DAYS)}."
            for c in r["choices"]
        ]
    return rows


def story_endings(world: World) -> tuple[Rows, Rows]:
    train, test = shipped(world)
    return _story(world, train, "train"), _story(world, test, "test")


def story_disjoint(world: World) -> tuple[Rows, Rows]:
    train, test = facts_disjoint(world)
    return _story(world, train, "train"), _story(world, test, "test")


def mixed_wording(world: World) -> tuple[Rows, Rows]:
    out = []
    for split in ("train", "test"):
        rng = random.Random(f"variant-wording-{world.seed}-{split}")
        rows = world.qa_items(split)
        for r in rows:
            name = r["choices"][0].split(" ")[0]
            values = [c.rstrip(".").split(" ")[-1] for c in r["choices"]]
            forms = CORPUS_FACT[r["category"]]
            r["choices"] = [rng.choice(forms).format(n=name, v=v) for v in values]
        out.append(rows)
    return out[0], out[1]


# variant -> (task data, recipe overrides)
VARIANTS: dict[str, tuple[Callable[[World], tuple[Rows, Rows]], dict[str, Any]]] = {
    "shipped": (shipped, {}),
    "under-trained": (shipped, {"num_train_epochs": 3, "early_stopping_patience": None}),
    "label-noise": (label_noise, {}),
    "facts-once": (facts_once, {}),
    "facts-disjoint": (facts_disjoint, {}),
    "which-of-four": (which_of_four, {}),
    "mixed-wording": (mixed_wording, {}),
    "story-endings": (story_endings, {}),
    "story-disjoint": (story_disjoint, {}),
}


def variant_scenario(sc: Scenario, world: World, variant: str, root: Path) -> Scenario:
    """``sc``'s bases (linked) with the variant's ``world-qa`` files; built once."""
    if not (root / "tasks" / f"{TASK}.yaml").is_file():
        make = VARIANTS[variant][0]
        train, test = make(world)
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        write_task_files(world, tmp / "tasks")
        write_jsonl(tmp / "tasks" / TASK / "train.jsonl", train)
        write_jsonl(tmp / "tasks" / TASK / "test.jsonl", test)
        (tmp / "bases").symlink_to(Path(sc.root, "bases").resolve(), target_is_directory=True)
        tmp.rename(root)
    return Scenario(root, sc.recipe)


def run_variant(sc: Scenario, seed: int, variant: str, work: Path) -> dict[str, Any]:
    world = World.generate(seed, sc.recipe.world)
    vsc = variant_scenario(sc, world, variant, work / "scenario")
    recipe = dataclasses.replace(AdapterRecipe(), **VARIANTS[variant][1])
    res = run_task(vsc, TASK, work / "run", recipe, seed, DEMO_VARIANTS, 64)
    row = task_row(res)
    first = res["training"]["student-wrong"]["epochs"][0]
    m2 = res["training"]["v2"]
    row["m2_misfit"] = first.get("train_aligned_v1")
    row["m2_epochs"] = (m2["best_epoch"], len(m2["epochs"]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--size", default="small")
    ap.add_argument("--work", default="runs/bench_variants")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/scenario_variants.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in args.variants}
    for seed in args.seeds:
        sc = build_scenario(seed=seed, size=args.size, cache_dir=args.cache_dir)
        for v in args.variants:
            ts = time.perf_counter()
            work = Path(args.work) / f"{args.size}-seed{seed}" / v
            rows[v][seed] = run_variant(sc, seed, v, work)
            print(f"[seed {seed}] {v}: {time.perf_counter() - ts:.0f} s", flush=True)
    total = time.perf_counter() - t0
    seeds = " ".join(map(str, args.seeds))
    lines = [
        "# Where can Eq. 1 act? MUSCLE and `none` on variants of the scenario's MC task",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_scenario_variants.py --seeds {seeds} "
        f"--variants {' '.join(args.variants)} --size {args.size}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s); this "
        f"invocation {total / 60:.1f} min (finished runs in --work are reused). Each seed's "
        "bases are the shipped scenario's; only the `world-qa` data (or, for `under-trained`, "
        "the task adapters' epochs) change. Demo recipe otherwise.",
        "",
        "Points (%), mean ± std over seeds. *M2 misfit*: share of training answer tokens the "
        "MUSCLE run aligned to v1 in its first epoch (tokens where M2's argmax misses the "
        "label) — where Eq. 1 can act. Δ columns are against M2; Δ%NFR is relative.",
        "",
        "| variant | acc v1 | acc v2 | NFR v1→v2 | M2 misfit | Δ%NFR MUSCLE | Δ%NFR `none` "
        "| Δacc MUSCLE | Δacc `none` | MUSCLE NFR < `none` |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in args.variants:
        rs = [rows[v][s] for s in sorted(rows[v])]

        def rel(r: dict[str, Any], key: str) -> float | None:
            return (r[key] - r["nfr_v2"]) / r["nfr_v2"] if r["nfr_v2"] else None

        beats = sum(r["nfr_v2c"] < r["nfr_none"] for r in rs)
        lines.append(
            f"| {v} | {ms([r['acc_v1'] for r in rs], signed=False)} | "
            f"{ms([r['acc_v2'] for r in rs], signed=False)} | "
            f"{ms([r['nfr_v2'] for r in rs], signed=False)} | "
            f"{ms([r['m2_misfit'] for r in rs], signed=False)} | "
            f"{ms([rel(r, 'nfr_v2c') for r in rs])} | {ms([rel(r, 'nfr_none') for r in rs])} | "
            f"{ms([r['acc_v2c'] - r['acc_v2'] for r in rs])} | "
            f"{ms([r['acc_none'] - r['acc_v2'] for r in rs])} | {beats} of {len(rs)} |"
        )
    lines += ["", "Per seed: NFR v2 / MUSCLE / `none`, and M2's best epoch of those run:", ""]
    for v in args.variants:
        cells = [
            f"seed {s}: {100 * r['nfr_v2']:.1f} / {100 * r['nfr_v2c']:.1f} / "
            f"{100 * r['nfr_none']:.1f} (M2 {r['m2_epochs'][0]} of {r['m2_epochs'][1]})"
            for s, r in sorted(rows[v].items())
        ]
        lines.append(f"- {v}: " + "; ".join(cells))
    lines.append("")
    with atomic_open(args.out) as fh:
        fh.write("\n".join(lines))
    write_json(Path(args.out).with_suffix(".json"), {"rows": rows})
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    with torch_threads():  # $MUSCLE_THREADS or 1: the models are tiny
        main()
