"""The demo pipeline: the whole MUSCLE story on the built-in scenario, through the public APIs.

Per task: task adapters M1 (base v1) and M2 (base v2) with one recipe (best epoch by validation
cross-entropy); evaluation on the test split; the MUSCLE compatibility adapter (``student-wrong``)
and the ``none`` control (M2's adapter trained further with cross-entropy only, same steps);
evaluation; ``compare_files``.  Writes ``OUT/summary.json`` and ``OUT/report.html``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from muscle import __version__
from muscle.errors import MuscleError
from muscle.io import SCHEMA_VERSION, make_dir, read_json, write_json
from muscle.scenarios.scenario import (
    TASK_NAMES,
    Scenario,
    ScenarioRecipe,
    build_scenario,
    default_threads,
    torch_threads,
)


@dataclass(frozen=True)
class AdapterRecipe:
    """The demo's training recipe (small-scale overrides of the paper defaults)."""

    lora_r: int = 8
    lora_alpha: int = 16
    learning_rate: float = 3e-3
    num_train_epochs: int = 60  # an upper bound: early stopping ends the run at convergence
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    max_length: int = 96
    # Answer tokens only (the paper's loss covers the prompt too): with random names and
    # numbers in the prompts, validation CE over all tokens turns up (and early stopping
    # ends the run) before the answers are learned (world-math M2: 5-18 % exact match, vs
    # 53-72 % with the loss on the answers; benchmarks/results/README.md).
    loss_on: str = "answer"
    early_stopping_patience: int | None = 4  # task adapters: stop once val CE stalls
    compat_epochs: int = 5
    compat_learning_rate: float = 1e-3
    temperature: float = 2.0


# Compatibility runs: name -> (mask, extra CompatTrainingConfig fields).
DEMO_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "student-wrong": ("student-wrong", {}),
    "none": ("none", {}),
}
# The paper's Table 7 ablation: variant name -> (mask, extra CompatTrainingConfig fields).
ABLATION_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "student-wrong": ("student-wrong", {}),
    "old-correct": ("old-correct", {}),
    "old-all": ("old-all", {}),
    "token-likelihood": ("token-likelihood", {}),
    "sequence-likelihood": ("sequence-likelihood", {}),
    "focal": ("focal", {}),
    "muscle+ce": ("student-wrong", {"ce_weight": 0.5}),
}
# Beyond the paper: the ensemble objective, its epoch chosen by its own validation objective
# (its target is the two teachers' mean, not the label).
BEYOND_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ensemble": ("ensemble", {"select_by": "loss"}),
}
ALL_VARIANTS = {**ABLATION_VARIANTS, **BEYOND_VARIANTS}
VARIANT_LABELS = {
    "none": "none (vanilla v2, CE for the same steps)",
    "ensemble": "ensemble (KL to the mean of M1's and M2's log-probabilities, every token; "
    "best epoch by that KL)",
    "student-wrong": "MUSCLE (student-wrong)",
    "muscle+ce": "MUSCLE + CE (λ = 0.5)",
}


@dataclass
class DemoConfig:
    """What ``muscle demo`` runs."""

    out: str = "runs/demo"
    tasks: tuple[str, ...] = TASK_NAMES
    seed: int = 0
    size: str = "small"
    variants: dict[str, tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: dict(DEMO_VARIANTS)
    )
    recipe: AdapterRecipe = field(default_factory=AdapterRecipe)
    cache_dir: str | None = None
    eval_batch_size: int = 64
    threads: int = field(default_factory=default_threads)
    # Tasks run side by side in this many worker processes (each with ``threads`` threads).
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)


def _log(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


@contextlib.contextmanager
def quiet_training(log: Path) -> Iterator[None]:
    """Send the trainers' per-step prints to ``log``; no loading bars or deprecation noise."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.parent.mkdir(parents=True, exist_ok=True)
    with (
        log.open("a", encoding="utf-8") as fh,
        contextlib.redirect_stdout(fh),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _shared_fields(recipe: AdapterRecipe, seed: int) -> dict[str, Any]:
    """Config fields every adapter of one run shares (task adapters and compatibility)."""
    return {
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "warmup_ratio": recipe.warmup_ratio,
        "max_length": recipe.max_length,
        "loss_on": recipe.loss_on,
        "save_steps": 10**9,
        "seed": seed,
        "device": "cpu",
        "show_progress": False,
    }


def train_task(
    scenario: Scenario, task: str, base: str, out: Path, recipe: AdapterRecipe, seed: int
) -> dict[str, Any]:
    """A task adapter on ``base`` (M1 or M2), or the existing one in ``out``."""
    from muscle.training import TaskTrainingConfig, train_task_adapter

    if (out / "training.json").is_file():
        return read_json(out / "training.json")
    cfg = TaskTrainingConfig(
        model=base,
        task=scenario.task_spec(task),
        output_dir=str(out),
        lora_r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        early_stopping_patience=recipe.early_stopping_patience,
        resume=_interrupted(out),
        **_shared_fields(recipe, seed),
    )
    return train_task_adapter(cfg)


def _training(out: Path) -> str:
    """What the pipeline does with the run in ``out``: train it, reuse or continue it."""
    if (out / "training.json").is_file():
        return "reusing"
    return "continuing" if _interrupted(out) else "training"


def _interrupted(out: Path) -> bool:
    """Whether ``out`` holds checkpoints of an interrupted run (a rerun continues it)."""
    return any((out / "checkpoints").glob("checkpoint-*"))


def train_compat(
    scenario: Scenario,
    task: str,
    mask: str,
    m1: Path,
    m2: Path,
    out: Path,
    recipe: AdapterRecipe,
    seed: int,
    **overrides: Any,
) -> dict[str, Any]:
    """A compatibility adapter (``mask``) from M2, distilled from M1 where the mask says."""
    from muscle.training import CompatTrainingConfig, train_compat_adapter

    if (out / "training.json").is_file():
        return read_json(out / "training.json")
    cfg = CompatTrainingConfig(
        old_model=scenario.base_v1,
        old_adapter=str(m1),
        new_model=scenario.base_v2,
        new_adapter=str(m2),
        task=scenario.task_spec(task),
        output_dir=str(out),
        mask=mask,
        temperature=recipe.temperature,
        learning_rate=recipe.compat_learning_rate,
        num_train_epochs=recipe.compat_epochs,
        resume=_interrupted(out),
        **_shared_fields(recipe, seed),
        **overrides,
    )
    return train_compat_adapter(cfg)


def evaluate_adapter(
    scenario: Scenario, task: str, base: str, adapter: Path, out_path: Path, batch_size: int
) -> dict[str, Any]:
    """Per-instance records of base + adapter on the task's test split (cached on disk)."""
    from muscle.evaluation import evaluate_model
    from muscle.evaluation.records import partial_paths

    summary = out_path.with_name(out_path.name + ".summary.json")
    if out_path.is_file() and summary.is_file():
        return read_json(summary)
    res = evaluate_model(
        base,
        adapter=str(adapter),
        task=scenario.task_spec(task),
        split="test",
        batch_size=batch_size,
        device="cpu",
        dtype="float32",
        out_path=out_path,
        resume=bool(partial_paths(out_path)),  # an interrupted run
        show_progress=False,
    )
    return res.summary


def run_task(
    scenario: Scenario,
    task: str,
    out: Path,
    recipe: AdapterRecipe,
    seed: int,
    variants: dict[str, tuple[str, dict[str, Any]]],
    eval_batch_size: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """M1, M2, one compatibility adapter per variant, their evaluations and the comparison."""
    from muscle.compare import compare_files

    t0 = time.perf_counter()
    bases = {"v1": scenario.base_v1, "v2": scenario.base_v2}
    logs: dict[str, Any] = {}
    for name, base in bases.items():
        doing = _training(out / f"m_{name}")
        _log(progress, f"{task}: {doing} the task adapter on base {name}")
        with quiet_training(out / "train.log"):
            logs[name] = train_task(scenario, task, base, out / f"m_{name}", recipe, seed)
    evals: dict[str, Path] = {}
    for name, base in bases.items():
        _log(progress, f"{task}: evaluating M{name.removeprefix('v')}")
        evals[name] = out / f"eval_{name}.jsonl"
        with quiet_training(out / "train.log"):
            evaluate_adapter(scenario, task, base, out / f"m_{name}", evals[name], eval_batch_size)
    for name, (mask, overrides) in variants.items():
        c_dir = out / f"c_{name}"
        _log(progress, f"{task}: {_training(c_dir)} the compatibility adapter {name}")
        with quiet_training(out / "train.log"):
            logs[name] = train_compat(
                scenario, task, mask, out / "m_v1", out / "m_v2", c_dir, recipe, seed, **overrides
            )
        evals[name] = out / f"eval_{name}.jsonl"
        _log(progress, f"{task}: evaluating the {name} adapter")
        with quiet_training(out / "train.log"):
            evaluate_adapter(scenario, task, scenario.base_v2, c_dir, evals[name], eval_batch_size)
    names = list(evals)
    compat = compare_files([str(evals[n]) for n in names], str(out / "compare"), names=names)
    return {
        "task": task,
        "compat": compat,
        "training": {k: _training_brief(v) for k, v in logs.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _training_brief(log: dict[str, Any]) -> dict[str, Any]:
    """Learning curve, chosen epoch, steps run and planned, and the learning rate at an early
    stop (share of its peak; ``None`` if the run did not stop early) from a ``training.json``."""
    from muscle.training.diagnostics import lr_at_stop

    steps, planned = log.get("total_steps"), log.get("planned_steps")
    peak = log.get("config", {}).get("learning_rate")
    history = log.get("log_history", [])
    stopped = lr_at_stop(history, steps, planned, peak) if steps and planned else None
    return {
        "best_epoch": log.get("best_epoch"),
        "epochs": log.get("epochs", []),
        "total_steps": steps,
        "planned_steps": planned,
        "stopped_lr": stopped,
        "seconds": log.get("seconds"),
    }


def task_row(result: dict[str, Any]) -> dict[str, Any]:
    """The summary row of one task (paper-style figures) from its compare result."""
    compat = result["compat"]
    pairs = {(p["old"], p["new"]): p for p in compat["pairs"]}
    models = {m["name"]: m for m in compat["models"]}
    key = "accuracy" if compat["kind"] == "discrete" else "mean_score"

    def acc(name: str) -> float:
        return float(models[name][key])

    base = pairs[("v1", "v2")]
    row: dict[str, Any] = {
        "kind": compat["kind"],
        "n": compat["n"],
        "nf_v2": base["nf"],
        "acc_v1": acc("v1"),
        "acc_v2": acc("v2"),
        "nfr_v2": base["nfr"],
        "pfr_v2": base["pfr"],
    }
    for mask, tag in (("student-wrong", "v2c"), ("none", "none")):
        if mask in models:
            p = pairs[("v1", mask)]
            row[f"acc_{tag}"] = acc(mask)
            row[f"nfr_{tag}"] = p["nfr"]
            row[f"pfr_{tag}"] = p["pfr"]
            # which of v2's negative flips the candidate removed and which it added
            row[f"flips_removed_{tag}"] = p["flips_removed"]
            row[f"flips_added_{tag}"] = p["flips_added"]
            if tag == "v2c":  # compare's candidate deltas against v1 -> v2
                row["delta_nfr"] = p["delta_nfr"]
                row["delta_nfr_ci95"] = p["delta_nfr_ci95"]
                pct = p["delta_nfr_pct"]
                row["nfr_reduction_pct"] = None if pct is None else (-100.0 * pct or 0.0)  # no -0
                row["delta_acc"] = p["delta_accuracy"]
    if compat["kind"] == "continuous":
        row["m_g_v2"], row["m_r_v2"] = base.get("m_g"), base.get("m_r")
        if ("v1", "student-wrong") in pairs:
            p = pairs[("v1", "student-wrong")]
            row["m_g_v2c"], row["m_r_v2c"] = p.get("m_g"), p.get("m_r")
    return row


def fairness_warnings(summary: dict[str, Any]) -> list[str]:
    """The fair-comparison checks: M1/M2's validation CE should have levelled off by
    their last epoch, without an early stop at a high learning rate, and ``none`` should not be
    clearly better than M2 (else M2 was under-trained); and whether the MUSCLE run had any
    training token to align to v1."""
    from muscle.training.diagnostics import run_warnings

    out = []
    for task, runs in summary["training"].items():
        for name in ("v1", "v2"):
            run = runs.get(name, {})
            found = run_warnings("task", None, run.get("epochs") or [], run.get("stopped_lr"))
            out += [f"{task}: M{name.removeprefix('v')}: {w}" for w in found]
        epochs = runs.get("student-wrong", {}).get("epochs") or []
        out += [f"{task}: MUSCLE: {w}" for w in run_warnings("compat", "student-wrong", epochs)]
        row = summary["tasks"][task]
        gain = row["acc_none"] - row["acc_v2"] if row.get("acc_none") is not None else 0.0
        if round(gain, 9) > 0.02:
            out.append(
                f"{task}: `none` is {100 * gain:.1f} points more "
                "accurate than M2: M2 was probably not converged"
            )
    return out


def _run_tasks(
    config: DemoConfig, scenario: Scenario, work: Path, progress: Callable[[str], None] | None
) -> dict[str, dict[str, Any]]:
    """``run_task`` for every task: in this process, or with ``config.jobs`` > 1 in that many
    worker processes (spawned; their progress lines come back through a queue)."""
    args = (config.recipe, config.seed, config.variants, config.eval_batch_size)
    jobs = max(1, min(config.jobs, len(config.tasks)))
    if jobs == 1:
        return {t: run_task(scenario, t, work / t, *args, progress) for t in config.tasks}
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    lines = ctx.Queue()

    def relay(timeout: float = 0.0) -> None:
        while True:
            try:
                _log(progress, lines.get(timeout=timeout) if timeout else lines.get_nowait())
            except queue_module.Empty:
                return

    init = (os.getpid(), lines, config.threads)
    with ProcessPoolExecutor(jobs, ctx, initializer=_init_worker, initargs=init) as pool:
        futures = {t: pool.submit(_task_worker, scenario, t, work / t, *args) for t in config.tasks}
        pending = set(futures.values())
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                relay()
                if any(f.exception() for f in done):
                    for f in pending:
                        f.cancel()
                    break
        except KeyboardInterrupt:  # Ctrl-C: the workers ignore it; stop them, then the demo
            handler = signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second: at once
            try:
                # the worker processes, taken before shutdown() empties the executor's table
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                pool.shutdown(wait=True, cancel_futures=True)  # quick: no worker is left
            finally:
                if handler is not None:  # None: not set from Python (an embedding program's)
                    signal.signal(signal.SIGINT, handler)  # the caller's, as before
            raise
        relay(timeout=0.5)  # lines still in the queue's pipe
        return {t: f.result() for t, f in futures.items()}  # raises a worker's error


def _init_worker(parent: int, lines: Any, threads: int) -> None:
    """Set up a worker process: its progress lines go to ``lines``, torch uses ``threads``
    threads, Ctrl-C is left to the demo's process, and it exits once that process is gone
    (killed, it would leave the workers training on, orphaned)."""
    import threading

    import torch

    global _progress_lines
    _progress_lines = lines
    torch.set_num_threads(threads)
    # Ctrl-C reaches the whole process group: the demo's process stops the workers (each
    # would otherwise stop mid-task, or swallow it and go on with the queued tasks)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


_progress_lines: Any = None  # in a worker process: the queue of its progress lines


def _task_worker(*args: Any) -> dict[str, Any]:
    return run_task(*args, progress=_progress_lines.put)


def run_demo(config: DemoConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the pipeline; write ``summary.json`` and ``report.html`` into ``config.out``."""
    unknown = [t for t in config.tasks if t not in TASK_NAMES]
    if unknown:
        raise MuscleError(
            f"unknown demo task(s) {', '.join(unknown)}; use any of {', '.join(TASK_NAMES)}"
        )
    ScenarioRecipe.preset(config.size, config.seed)  # an unknown size: one line, before any work
    out = make_dir(config.out, "--out")  # before any work
    with torch_threads(config.threads):  # see muscle.scenarios.scenario.default_threads
        return _run_demo(config, out, progress)


def _run_demo(
    config: DemoConfig, out: Path, progress: Callable[[str], None] | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    _log(progress, f"building or loading the scenario (seed {config.seed}, size {config.size})")
    scenario = build_scenario(
        seed=config.seed, size=config.size, cache_dir=config.cache_dir, progress=progress
    )
    t_scenario = time.perf_counter() - t0
    # An earlier run's summary and report would pass for this run's if it is interrupted: they
    # are written again at its end (the per-task work under runs/ is kept, to continue from).
    # Removed once the options are known good (a mistyped --cache-dir loses nothing).
    for name in ("summary.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    # Runs of another recipe or scenario never mix: key the working folder by both.
    from muscle.io import sha256_text

    run_key = sha256_text(repr((scenario.recipe.key(), asdict(config.recipe))))[:12]
    # (each variant's folder is named after it; a variant's overrides live in its training.json)
    work = out / "runs" / f"seed{config.seed}-{run_key}"
    results = _run_tasks(config, scenario, work, progress)
    summary = {
        "schema_version": SCHEMA_VERSION,
        "muscle_version": __version__,
        "seed": config.seed,
        "size": config.size,
        "scenario": {
            "root": str(scenario.root),
            "key": scenario.recipe.key(),
            "pretraining": {
                v: {k: log[k] for k in ("parameters", "corpus_tokens", "final_loss", "seconds")}
                for v, log in scenario.pretraining_log().items()
            },
        },
        "recipe": asdict(config.recipe),
        "tasks": {t: task_row(r) for t, r in results.items()},
        "training": {t: r["training"] for t, r in results.items()},
        "work_dir": str(work.resolve()),
        "seconds": {
            "scenario": round(t_scenario, 1),
            "total": round(time.perf_counter() - t0, 1),
            **{t: r["seconds"] for t, r in results.items()},
        },
    }
    summary["warnings"] = fairness_warnings(summary)
    from muscle.scenarios.report import write_report

    write_report(summary, out / "report.html")
    write_json(out / "summary.json", summary)
    return summary
