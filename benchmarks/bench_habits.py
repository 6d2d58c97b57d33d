"""Answers no model can fit: MUSCLE on a HellaSwag-like task between task models of equal accuracy.

In the paper's multiple-choice tasks the gold ending is one plausible continuation of many, so no
task model fits its training answers, and two task models of comparable accuracy (Llama 1 → 2)
err on different items because what their bases know differs.  This benchmark builds that
situation in the scenario's world: each person has *habits* (a seeded distribution over places);
each base's corpus adds its own draw of diary lines from them ("On Monday, Alice went to the
park.": 10 per person for v1, 14 for v2); bases v1 and v2 share one architecture (as Llama 1 and
2), v2 trained longer on more data.  The task (``World.habit_qa_items``, scored as ``world-qa``):
"What places did Alice visit?" with four endings naming three places each, the gold one drawn
from Alice's habits, the others from three other people's.

It runs M1, M2, MUSCLE (``student-wrong``), ``none`` and ``old-all`` (KL to M1 on every token: can
distillation on training items move v2 towards v1 at all?) with the demo recipe, except that the
compatibility runs use the task adapters' learning rate for 10 epochs (the paper's setting), and
reports beside them an *oracle ensemble* — each choice scored by the mean of M1's and M2's
log-likelihoods — the "ensemble knowledge" the paper credits its gains to (§8), computed from the
evaluation files: the ceiling of what mixing the two models can give.

    .venv/bin/python benchmarks/bench_habits.py --seeds 0 1 2

``--compat-epochs N`` trains the compatibility adapters longer, ``--lora-r R`` gives all
adapters rank R (alpha 2R, the paper's ratio); ``--variants`` picks among
``student-wrong`` (always), ``none``, ``old-all`` and ``ensemble`` (KD from the mean of M1's
and M2's log-probabilities on every token, beyond the paper); ``--bases shipped`` puts the
task on the shipped scenario's bases.  ``--test-items N --adapters-from DIR`` (with a new
``--work``) evaluates the finished adapters of the run in ``DIR`` on a larger test split,
whose first 200 items are the default one's: 200 items hold 15-29 negative flips, too few to
tell -20 % from -40 %.

Each seed builds its scenario, then runs the task (the 3 seeds side by side on 2 cores: 28 min);
finished runs are reused, so seeds can run side by side (one ``--seeds`` each, a different
``--out``) and a last invocation over all seeds only collects.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
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
from muscle.scenarios.demo import (
    ALL_VARIANTS,
    VARIANT_LABELS,
    AdapterRecipe,
    run_task,
    task_row,
)
from muscle.scenarios.scenario import (
    BASE_RECIPES,
    Scenario,
    ScenarioRecipe,
    default_threads,
    write_task_files,
)
from muscle.scenarios.world import SIZES, World
from muscle.training.data import docs_hash

TASK = "world-qa"
DEFAULT_VARIANTS = ("student-wrong", "none", "old-all")
VARIANTS = (*DEFAULT_VARIANTS, "ensemble")
LABELS = {"v2": "M2 (vanilla)", **VARIANT_LABELS, "old-all": "old-all (KL to M1 on every token)"}


BASES = {
    "one-arch": "bases of one architecture, v1 1,500 and v2 2,000 steps",
    "shipped": "the shipped bases: v1 smaller, 1,000 steps; v2 2,000 steps",
}


def habits_recipe(seed: int, bases: str = "one-arch") -> ScenarioRecipe:
    """The small scenario with diary lines (v1 10, v2 14 per person); v1 of v2's size
    (``one-arch``) or the shipped, smaller v1 (``shipped``)."""
    world = dataclasses.replace(SIZES["small"], v1_habit_lines=10, v2_habit_lines=14)
    v1, v2 = BASE_RECIPES["small"]
    if bases == "one-arch":
        v1 = dataclasses.replace(v2, steps=1500)
    return ScenarioRecipe(seed, "small", world, v1, v2, 800)


def adapter_recipe(
    compat_epochs: int = 10,
    lora_r: int = 8,
    task_epochs: int | None = None,
    compat_lr: float | None = None,
) -> AdapterRecipe:
    """The demo's recipe, the compatibility runs at the task adapters' learning rate (the
    paper's setting; ``compat_lr`` another) and every adapter of rank ``lora_r`` with α = 2 r
    (the paper's ratio). With ``task_epochs``, the task adapters run that many epochs (the
    learning rate decaying to zero over them) and keep their best by validation CE, without
    early stopping."""
    base = AdapterRecipe()
    recipe = dataclasses.replace(
        base,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        compat_epochs=compat_epochs,
        compat_learning_rate=compat_lr or base.learning_rate,
    )
    if task_epochs is not None:
        recipe = dataclasses.replace(
            recipe, num_train_epochs=task_epochs, early_stopping_patience=None
        )
    return recipe


def derived_scenario(
    sc: Scenario,
    root: Path,
    write_tasks: Callable[[Path], None],
    test_items: int,
    train_items: int | None = None,
) -> Scenario:
    """A scenario in ``root`` with ``sc``'s bases (linked) and the task files ``write_tasks``
    writes into the folder it is given; built once (in a sibling, then renamed).  Refuses a
    ``root`` whose ``world-qa`` test (and, if given, train) split holds another count."""
    if not (root / "tasks").is_dir():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        write_tasks(tmp / "tasks")
        (tmp / "bases").symlink_to(Path(sc.root, "bases").resolve(), target_is_directory=True)
        tmp.rename(root)
    for split, want in (("test", test_items), ("train", train_items)):
        if want is None:
            continue
        with open(root / "tasks" / TASK / f"{split}.jsonl", encoding="utf-8") as fh:
            have = sum(1 for _ in fh)
        if have != want:
            raise SystemExit(f"{root} holds {have} {split} items, not {want}: use a new --work")
    return Scenario(root, sc.recipe)


def habits_scenario(
    sc: Scenario, root: Path, test_items: int | None = None, train_items: int | None = None
) -> Scenario:
    """``sc``'s bases (linked) with the habit task as ``world-qa``; built once.  With
    ``test_items`` (``train_items``) the test (training) split has that many items: the
    default's first, then more."""
    world = World.generate(sc.recipe.seed, sc.recipe.world)
    n = test_items or world.size.qa_test
    m = train_items or world.size.qa_train
    # the people and habits depend on the seed only
    test = World.generate(sc.recipe.seed, dataclasses.replace(world.size, qa_test=n))
    train = World.generate(sc.recipe.seed, dataclasses.replace(world.size, qa_train=m))

    def write(tasks: Path) -> None:
        write_task_files(world, tasks)
        write_jsonl(tasks / TASK / "train.jsonl", train.habit_qa_items("train"))
        write_jsonl(tasks / TASK / "test.jsonl", test.habit_qa_items("test"))

    return derived_scenario(sc, root, write, n, m)


def _records(run: Path, name: str) -> dict[str, dict[str, Any]]:
    """The per-instance evaluation records of model ``name`` in ``run``, by ``doc_id``."""
    with open(run / f"eval_{name}.jsonl", encoding="utf-8") as fh:
        return {r["doc_id"]: r for r in map(json.loads, fh)}


def oracle_ensemble(run: Path, weight: float = 0.5) -> dict[str, float]:
    """Accuracy and NFR (against M1) of scoring each choice by the weighted mean of M1's and M2's
    log-likelihoods, and how often the ensemble chooses as M1 does."""
    v1, v2 = _records(run, "v1"), _records(run, "v2")
    correct = flips = same = 0
    for doc, a in v1.items():
        lls = [
            weight * x + (1 - weight) * y
            for x, y in zip(a["loglikelihoods"], v2[doc]["loglikelihoods"], strict=True)
        ]
        pred = max(range(len(lls)), key=lls.__getitem__)
        correct += pred == a["target"]
        flips += bool(a["correct"]) and pred != a["target"]
        same += pred == a["prediction"]
    n = len(v1)
    return {"acc": correct / n, "nfr": flips / n, "agree_v1": same / n}


def agreement(run: Path, name: str) -> float:
    """Share of test items on which model ``name`` chooses as M1 does."""
    v1, other = _records(run, "v1"), _records(run, name)
    return sum(other[d]["prediction"] == r["prediction"] for d, r in v1.items()) / len(v1)


@functools.cache
def _weights_hash(model_dir: str) -> str | None:
    f = Path(model_dir) / "model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None


def link_adapters(
    src: Path,
    run: Path,
    bases: dict[str, str],
    train_hash: str | None = None,
    compat: tuple[float, int] | None = None,
    skip_compat: bool = False,
) -> None:
    """Link the finished adapters (``m_*``, ``c_*``) of the run ``src`` into ``run``, after
    checking that the bases each was trained on (``training.json``) have the weights of
    ``bases`` (``{"v1": folder, "v2": folder}``, matched by folder name) and, with
    ``train_hash``, that its training docs had that hash (``docs_hash`` of the train split).
    With ``compat = (learning rate, epochs)``, compatibility adapters trained otherwise are
    left out (they are trained anew); with ``skip_compat``, all of them are."""
    want = {name: _weights_hash(folder) for name, folder in bases.items()}
    run.mkdir(parents=True, exist_ok=True)
    for d in sorted(src.glob("[mc]_*")):
        if not (d / "training.json").is_file() or (run / d.name).exists():
            continue
        record = json.loads((d / "training.json").read_text(encoding="utf-8"))
        cfg = record["config"]
        trained = (cfg.get("learning_rate"), cfg.get("num_train_epochs"))
        if d.name.startswith("c_") and (skip_compat or (compat and trained != compat)):
            continue
        for key in ("model", "old_model", "new_model"):
            used = record["config"].get(key)
            if used and _weights_hash(used) != want.get(Path(used).name):
                raise SystemExit(f"{d} was trained on {used}, not on these bases: retrain it")
        if train_hash is not None and record.get("data", {}).get("hash") != train_hash:
            raise SystemExit(f"{d} was trained on other training docs than these: retrain it")
        (run / d.name).symlink_to(d.resolve(), target_is_directory=True)


def run_seed(
    seed: int,
    work: Path,
    recipe: AdapterRecipe,
    variants: list[str],
    bases: str = "one-arch",
    test_items: int | None = None,
    adapters_from: Path | None = None,
    train_items: int | None = None,
    compat_select: str = "ce",
) -> dict[str, Any]:
    sc = build_scenario(recipe=habits_recipe(seed, bases), progress=print)
    hsc = habits_scenario(sc, work / "scenario", test_items, train_items)
    if adapters_from is not None:
        bases_now = {"v1": hsc.base_v1, "v2": hsc.base_v2}
        train = docs_hash(hsc.task(TASK).load_docs(None, "train"))
        compat = (recipe.compat_learning_rate, recipe.compat_epochs)
        link_adapters(
            adapters_from / f"seed{seed}" / "run",
            work / "run",
            bases_now,
            train,
            compat,
            skip_compat=compat_select != "ce",
        )
    masks = {k: ALL_VARIANTS[k] for k in variants}
    if compat_select != "ce":  # every compatibility run keeps the adapter so chosen
        masks = {k: (m, {**kw, "select_by": compat_select}) for k, (m, kw) in masks.items()}
    res = run_task(hsc, TASK, work / "run", recipe, seed, masks, 64)
    row = task_row(res)
    nfr = {p["new"]: p["nfr"] for p in res["compat"]["pairs"] if p["old"] == "v1"}
    acc = {m["name"]: m["accuracy"] for m in res["compat"]["models"]}
    row["models"] = {
        n: {"acc": acc[n], "nfr": nfr[n], "agree_v1": agreement(work / "run", n)}
        for n in ("v2", *variants)
    }
    row["misfit"] = res["training"]["student-wrong"]["epochs"][0].get("train_aligned_v1")
    row["oracle"] = oracle_ensemble(work / "run")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument("--compat-epochs", type=int, default=10)
    ap.add_argument("--lora-r", type=int, default=8, help="rank of all adapters (alpha = 2 r)")
    ap.add_argument(
        "--compat-lr",
        type=float,
        help="compatibility runs' learning rate (default: the task adapters', 3e-3)",
    )
    ap.add_argument(
        "--compat-select",
        default="ce",
        choices=["ce", "last"],
        help="compatibility adapters: best epoch by validation CE (the paper's rule) or the "
        "last epoch (with --adapters-from, they are all trained anew)",
    )
    ap.add_argument(
        "--task-epochs",
        type=int,
        help="task adapters: this many epochs, best by validation CE, no early stopping "
        "(default: up to 60, stopped after 4 without improvement)",
    )
    ap.add_argument(
        "--bases",
        default="one-arch",
        choices=BASES,
        help="; ".join(f"{k}: {v}" for k, v in BASES.items()),
    )
    ap.add_argument(
        "--test-items", type=int, help="test split size (default 200; the first 200 the same)"
    )
    ap.add_argument(
        "--train-items",
        type=int,
        help="training split size, validation included (default 400; the first 400 the same)",
    )
    ap.add_argument(
        "--adapters-from", help="a --work folder whose finished adapters to evaluate (linked)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch threads ($MUSCLE_THREADS or 1: one per seed when seeds run side by side)",
    )
    ap.add_argument("--work", default="runs/bench_habits")
    ap.add_argument("--out", default="benchmarks/results/habits.md")
    args = ap.parse_args()
    if "student-wrong" not in args.variants:
        ap.error("--variants must include student-wrong")
    recipe = adapter_recipe(args.compat_epochs, args.lora_r, args.task_epochs, args.compat_lr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = {}
    for seed in args.seeds:
        ts = time.perf_counter()
        rows[seed] = run_seed(
            seed,
            Path(args.work) / f"seed{seed}",
            recipe,
            args.variants,
            args.bases,
            args.test_items,
            Path(args.adapters_from) if args.adapters_from else None,
            args.train_items,
            args.compat_select,
        )
        print(f"[seed {seed}] {time.perf_counter() - ts:.0f} s", flush=True)
    total = time.perf_counter() - t0
    rs = [rows[s] for s in sorted(rows)]

    def rel(r: dict[str, Any], nfr: float) -> float:
        return (nfr - r["nfr_v2"]) / r["nfr_v2"]

    cells = {
        LABELS[n]: [
            (r["models"][n]["acc"], r["models"][n]["nfr"], r["models"][n]["agree_v1"]) for r in rs
        ]
        for n in ("v2", *args.variants)
    }
    cells["oracle ensemble (mean of M1's and M2's log-likelihoods)"] = [
        (r["oracle"]["acc"], r["oracle"]["nfr"], r["oracle"]["agree_v1"]) for r in rs
    ]
    seeds = " ".join(map(str, sorted(rows)))
    n_train = args.train_items or SIZES["small"].qa_train
    default = list(DEFAULT_VARIANTS)
    flags = f" --variants {' '.join(args.variants)}" if args.variants != default else ""
    if args.compat_epochs != ap.get_default("compat_epochs"):
        flags += f" --compat-epochs {args.compat_epochs}"
    if args.lora_r != ap.get_default("lora_r"):
        flags += f" --lora-r {args.lora_r}"
    if args.compat_lr:
        flags += f" --compat-lr {args.compat_lr:g}"
    if args.compat_select != "ce":
        flags += f" --compat-select {args.compat_select}"
    if args.task_epochs:
        flags += f" --task-epochs {args.task_epochs}"
    if args.bases != ap.get_default("bases"):
        flags += f" --bases {args.bases}"
    if args.train_items:
        flags += f" --train-items {args.train_items}"
    if args.test_items:
        flags += f" --test-items {args.test_items}"
    if args.adapters_from:
        flags += f" --adapters-from {args.adapters_from}"
    if args.work != ap.get_default("work"):
        flags += f" --work {args.work}"
    if args.out != ap.get_default("out"):
        flags += f" --out {args.out}"
    lines = [
        "# Answers no model can fit: MUSCLE on a HellaSwag-like task at equal accuracy",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_habits.py --seeds {seeds}{flags}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {args.threads} torch thread(s); this "
        f"invocation {total / 60:.1f} min (finished runs in --work are reused). Recipe: "
        f"`{recipe}`; scenario: `habits_recipe(seed, {args.bases!r})` (diary lines v1 10 / v2 "
        f"14 per person, {BASES[args.bases]}).",
        "",
        f"M1 accuracy {ms([r['acc_v1'] for r in rs], signed=False)} %, M2 "
        f"{ms([r['acc_v2'] for r in rs], signed=False)} %; share of training answer tokens M2 "
        f"misses (where Eq. 1 aligns to v1) {ms([r['misfit'] for r in rs], signed=False)} %.",
        "",
        f"Points (%) on {rs[0]['n']} test items per seed ({n_train} training items, a fifth "
        "of them for validation), mean ± std over seeds; Δ%NFR is "
        "relative to M2's NFR; *agree v1*: share of "
        "test items on which the model chooses as M1 does.",
        "",
        "| model | acc | NFR (v1 → model) | Δ%NFR vs M2 | agree v1 |",
        "|---|---|---|---|---|",
    ]
    for name, vals in cells.items():
        lines.append(
            f"| {name} | {ms([a for a, _, _ in vals], signed=False)} | "
            f"{ms([n for _, n, _ in vals], signed=False)} | "
            f"{ms([rel(r, n) for r, (_, n, _) in zip(rs, vals, strict=True)])} | "
            f"{ms([g for _, _, g in vals], signed=False)} |"
        )
    names = ", ".join(["M1", *(LABELS[n].split(" (")[0] for n in ("v2", *args.variants))])
    lines += ["", f"Per seed (acc / NFR): {names}, oracle ensemble:", ""]
    for s in sorted(rows):
        r = rows[s]
        cells_s = [f"{100 * r['acc_v1']:.1f}"] + [
            f"{100 * r['models'][n]['acc']:.1f} / {100 * r['models'][n]['nfr']:.1f}"
            for n in ("v2", *args.variants)
        ]
        cells_s.append(f"{100 * r['oracle']['acc']:.1f} / {100 * r['oracle']['nfr']:.1f}")
        lines.append(f"- seed {s}: " + ", ".join(cells_s))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:
        fh.write("\n".join(lines) + "\n")
    write_json(out.with_suffix(".json"), {"seeds": rows, "seconds": round(total, 1)})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
