"""The paper's ablation (Table 7) and the demo targets on the built-in scenario, over seeds.

For every seed (which varies the world, the bases, the task adapters' initialisation and data
order, and the compatibility runs) and task: M1, M2 with the demo recipe, then one compatibility
adapter per objective — ``none`` (vanilla v2, CE for the same steps), MUSCLE ``student-wrong``,
``old-correct``, ``old-all``, ``token-likelihood``, ``sequence-likelihood``, ``focal`` and MUSCLE
+ CE (λ = 0.5) — evaluated on the test split and compared with v1.  Writes a Markdown table of
ΔNFR_c, Δ%NFR_c, ΔPFR_c, Δacc_c (mean ± std over seeds, against M2) plus the per-seed demo figures.

    .venv/bin/python benchmarks/bench_ablation.py --seeds 0 1 2 \\
        --out benchmarks/results/ablation_scenario.md

``--variants student-wrong none`` runs the demo's two only (the demo targets over seeds).
``--equal-bases`` gives v1 v2's architecture and pre-training steps, so the update is one of data
only (v1's corpus states 70 % of the facts, v2's a different 80 %): do task models of comparable
accuracy follow?  ``--test-items N --adapters-from DIR`` (with a new ``--work``) evaluates the
finished adapters of the runs in ``DIR`` on test splits of ``N`` items (the default 200 first):
200 items hold only 2-9 of M2's negative flips on ``world-qa``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from muscle.io import atomic_open, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_habits import derived_scenario, link_adapters  # noqa: E402  (sibling scripts)
from bench_real_data import ms  # noqa: E402
from muscle.scenarios import build_scenario
from muscle.scenarios.demo import (
    ABLATION_VARIANTS,
    ALL_VARIANTS,
    AdapterRecipe,
    run_task,
    task_row,
)
from muscle.scenarios.demo import VARIANT_LABELS as LABELS
from muscle.scenarios.scenario import (
    TASK_NAMES,
    Scenario,
    ScenarioRecipe,
    torch_threads,
    write_task_files,
)
from muscle.scenarios.world import World
from muscle.training.data import docs_hash


def equal_bases_recipe(size: str, seed: int) -> ScenarioRecipe:
    """The preset scenario with base v1 built as v2 (architecture and steps) on its own corpus."""
    preset = ScenarioRecipe.preset(size, seed)
    return dataclasses.replace(preset, v1=preset.v2)


def continued_bases_recipe(size: str, seed: int, arch: str = "v1") -> ScenarioRecipe:
    """The preset scenario with both bases of the preset's ``arch`` (``v1``: the smaller, ``v2``:
    the larger, with its steps) and v2 = v1 continued on v2's corpus for half v1's steps again
    (``v2``) or as many (``v1``): a data update, as Phi 1 → 1.5."""
    preset = ScenarioRecipe.preset(size, seed)
    base = getattr(preset, arch)
    steps = base.steps if arch == "v1" else base.steps // 2
    v2 = dataclasses.replace(base, init_from="v1", steps=steps)
    return dataclasses.replace(preset, v1=base, v2=v2)


def larger_test_scenario(sc: Scenario, root: Path, n: int) -> Scenario:
    """``sc``'s bases (linked) and tasks, each test split of ``n`` items (the default's first,
    then more; the training splits unchanged); built once."""
    size = dataclasses.replace(sc.recipe.world, qa_test=n, math_test=n, dialog_test=n)
    world = World.generate(sc.recipe.seed, size)
    return derived_scenario(sc, root, lambda tasks: write_task_files(world, tasks), n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(ABLATION_VARIANTS),
        choices=list(ALL_VARIANTS),
        help="default: the paper's Table 7 objectives and `none`; also: ensemble",
    )
    ap.add_argument("--size", default="small")
    ap.add_argument("--work", default="runs/bench_ablation")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--equal-bases", action="store_true", help="v1 of v2's size and steps")
    ap.add_argument(
        "--continued-bases",
        choices=["v1", "v2"],
        help="v2 = v1 continued on v2's corpus, both of the preset's v1 or v2 architecture",
    )
    ap.add_argument("--test-items", type=int, help="test split size (default 200)")
    ap.add_argument("--adapters-from", help="a --work folder whose finished adapters to evaluate")
    ap.add_argument("--out", default="benchmarks/results/ablation_scenario.md")
    args = ap.parse_args()
    recipe = AdapterRecipe()
    variants = {k: ALL_VARIANTS[k] for k in args.variants}
    rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in args.tasks}
    pairs: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in args.tasks}
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    for seed in args.seeds:
        ts = time.perf_counter()
        sc = build_scenario(
            seed=seed,
            size=args.size,
            cache_dir=args.cache_dir,
            recipe=equal_bases_recipe(args.size, seed)
            if args.equal_bases
            else continued_bases_recipe(args.size, seed, args.continued_bases)
            if args.continued_bases
            else None,
            progress=lambda m: print(m),
        )
        timing[f"seed{seed}_scenario"] = round(time.perf_counter() - ts, 1)
        cont = {None: "", "v1": "-cont", "v2": "-cont-v2"}[args.continued_bases]
        run = f"{args.size}{'-equal' * args.equal_bases}{cont}-seed{seed}"
        if args.test_items:
            sc = larger_test_scenario(sc, Path(args.work) / f"{run}-scenario", args.test_items)
        for task in args.tasks:
            ts = time.perf_counter()
            if args.adapters_from:
                link_adapters(
                    Path(args.adapters_from) / run / task,
                    Path(args.work) / run / task,
                    {"v1": sc.base_v1, "v2": sc.base_v2},
                    docs_hash(sc.task(task).load_docs(None, "train")),
                )
            res = run_task(
                sc,
                task,
                Path(args.work) / run / task,
                recipe,
                seed,
                variants,
                64,
                progress=lambda m, s=seed: print(f"[seed {s}] {m}", flush=True),
            )
            timing[f"seed{seed}_{task}"] = round(time.perf_counter() - ts, 1)
            by_new = {p["new"]: p for p in res["compat"]["pairs"]}
            pairs[task][seed] = by_new
            rows[task][seed] = task_row(res)
    total = time.perf_counter() - t0

    lines = [
        "# Ablation on the built-in scenario (paper Table 7) and the demo targets",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_ablation.py --seeds "
        f"{' '.join(map(str, args.seeds))} --tasks {' '.join(args.tasks)} --variants "
        f"{' '.join(args.variants)} --size {args.size}{' --equal-bases' * args.equal_bases}"
        + (f" --continued-bases {args.continued_bases}" if args.continued_bases else "")
        + (f" --test-items {args.test_items}" if args.test_items else "")
        + (f" --adapters-from {args.adapters_from}" if args.adapters_from else "")
        + (f" --work {args.work}" if args.work != ap.get_default("work") else "")
        + (f" --out {args.out}" if args.out != ap.get_default("out") else "")
        + "`",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared with other jobs; load average at the end "
        f"{os.getloadavg()[0]:.1f}), {torch.get_num_threads()} torch thread(s); this invocation "
        f"{total / 60:.1f} min (finished adapters and evaluations in --work are reused).",
        f"Recipe: `{recipe}`.",
        "",
        f"Test splits of {rows[args.tasks[0]][args.seeds[0]]['n']} items. "
        "Deltas are against M2 (the vanilla task adapter on v2), in points (%), mean ± std over "
        f"{len(args.seeds)} seeds; each seed varies the world, both bases, the task adapters' "
        "initialisation and data order, and the compatibility run. Δ%NFR_c is relative "
        "(ΔNFR_c / NFR). For the ROUGE task a flip is any decrease of ROUGE-1 and acc is mean "
        "ROUGE-1.",
        "",
    ]
    for task in args.tasks:
        seeds = sorted(rows[task])
        base = [rows[task][s] for s in seeds]
        lines += [
            f"## {task}",
            "",
            f"acc v1 {ms([r['acc_v1'] for r in base], signed=False)}, "
            f"acc v2 {ms([r['acc_v2'] for r in base], signed=False)}, "
            f"NFR(v1→v2) {ms([r['nfr_v2'] for r in base], signed=False)}, "
            f"PFR(v1→v2) {ms([r['pfr_v2'] for r in base], signed=False)}",
            "",
            "| objective | ΔNFR_c | Δ%NFR_c | ΔPFR_c | Δacc_c |",
            "|---|---|---|---|---|",
        ]
        for v in args.variants:
            ps = [pairs[task][s].get(v) for s in seeds]
            if any(p is None for p in ps):
                continue
            v2 = [pairs[task][s]["v2"] for s in seeds]
            lines.append(
                f"| {LABELS.get(v, v)} | {ms([p['delta_nfr'] for p in ps])} | "
                f"{ms([p['delta_nfr_pct'] for p in ps])} | "
                f"{ms([p['pfr'] - b['pfr'] for p, b in zip(ps, v2, strict=True)])} | "
                f"{ms([p['delta_accuracy'] for p in ps])} |"
            )
        lines += ["", "Per seed (demo figures):", ""]
        lines += ["| seed | acc v1 | acc v2 | acc v2C | NFR v2 | NFR v2C | Δ%NFR_c | acc none |"]
        lines[-1] += " NFR none |"
        lines += ["|---|---|---|---|---|---|---|---|---|"]
        for s in seeds:
            r = rows[task][s]
            red = r.get("nfr_reduction_pct")
            lines.append(
                f"| {s} | {100 * r['acc_v1']:.1f} | {100 * r['acc_v2']:.1f} | "
                f"{_p(r.get('acc_v2c'))} | {100 * r['nfr_v2']:.1f} | {_p(r.get('nfr_v2c'))} | "
                f"{'–' if red is None else f'{-red:+.1f}%'} | {_p(r.get('acc_none'))} | "
                f"{_p(r.get('nfr_none'))} |"
            )
        lines.append("")
    lines += ["Seconds: " + ", ".join(f"{k} {v}" for k, v in timing.items()), ""]
    with atomic_open(args.out) as fh:
        fh.write("\n".join(lines))
    write_json(Path(args.out).with_suffix(".json"), {"rows": rows, "timing": timing})
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


def _p(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


if __name__ == "__main__":
    with torch_threads():  # $MUSCLE_THREADS or 1: the models are tiny
        main()
