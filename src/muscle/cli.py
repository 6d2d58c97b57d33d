"""The ``muscle`` command line.  Thin: every command parses options and calls the library.

Heavy imports (torch, transformers) happen inside the commands so ``muscle --help`` and
``muscle compare`` stay fast.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import TyperException

from muscle.errors import GateFailed, MuscleError
from muscle.tasks import list_tasks

_BUILTIN_TASKS = ", ".join(list_tasks())  # for --task's help (the registry is light: no torch)

app = typer.Typer(
    name="muscle",
    help="Measure and reduce negative flips when updating LLMs (MUSCLE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Train task adapters and MUSCLE compatibility adapters.", no_args_is_help=True
)
app.add_typer(train_app, name="train")


def _version(value: bool) -> None:
    if value:
        from muscle import __version__

        print(f"muscle-llm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """muscle-llm: compatible LLM updates."""


# --- compare ----------------------------------------------------------------------------------

_FIELD_HELP = "Once for all files, or once per file in order. Dots reach nested fields."


_COMPARE_EPILOG = (
    "Examples: muscle compare old.jsonl new.jsonl compat.jsonl --out report --max-nfr 0.02  |  "
    "muscle compare a/samples_gsm8k_x.jsonl b/samples_gsm8k_y.jsonl "
    "--metric exact_match,strict-match --out r  |  muscle compare f.jsonl f.jsonl --id-field @line "
    "--correct-field 6b.is_correct --correct-field 175b.is_correct --out r"
)


@app.command("compare", epilog=_COMPARE_EPILOG)
def compare_cmd(
    files: list[str] = typer.Argument(
        ..., help="OLD NEW [CANDIDATE ...]: per-instance results, joined on id.", show_default=False
    ),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Folder for compat.json, flips.jsonl, report.md, report.html."
    ),
    name: list[str] = typer.Option([], "--name", "-n", help="Model names, one per file."),
    fmt: str = typer.Option("auto", "--format", help="auto | muscle | lm-eval | generic."),
    metric: str | None = typer.Option(
        None, help="lm-eval metric[,filter] (e.g. exact_match,strict-match) or record field."
    ),
    id_field: list[str] = typer.Option([], help=f"Id field ('@line': position). {_FIELD_HELP}"),
    correct_field: list[str] = typer.Option([], help=f"Boolean/0-1 field. {_FIELD_HELP}"),
    prediction_field: list[str] = typer.Option([], help=f"Prediction field. {_FIELD_HELP}"),
    target_field: list[str] = typer.Option([], help=f"Gold answer field. {_FIELD_HELP}"),
    score_field: list[str] = typer.Option([], help=f"Score in [0, 1] field. {_FIELD_HELP}"),
    slice_by: list[str] = typer.Option(
        [], help="Categorical field for a per-slice breakdown; 'len(FIELD)': length quartiles."
    ),
    epsilon: float = typer.Option(0.0, help="Continuous scores: flip when |D| > epsilon."),
    allow_partial: bool = typer.Option(False, help="Compare the ids common to all files."),
    max_nfr: float | None = typer.Option(
        None, help="Release gate: exit 1 when NFR(old -> new), a fraction in [0, 1], exceeds this."
    ),
    max_rows: int = typer.Option(50, help="Regressions shown in the reports."),
) -> None:
    """Compare an old and a new model (and candidates) instance by instance.

    Flips, NFR/PFR, confidence intervals, McNemar, slices; writes compat.json, flips.jsonl and
    the HTML/Markdown reports."""
    from muscle.compare import check_gate, compare_files, validate_max_nfr

    validate_max_nfr(max_nfr)  # before any work
    compat = compare_files(
        files,
        out,
        names=name or None,
        format=fmt,
        metric=metric,
        slice_by=slice_by,
        allow_partial=allow_partial,
        epsilon=epsilon,
        max_rows=max_rows,
        id_field=id_field,
        correct_field=correct_field,
        prediction_field=prediction_field,
        target_field=target_field,
        score_field=score_field,
    )
    _print_compat(compat, out)
    check_gate(compat, max_nfr)


def _print_compat(compat: dict, out: str | None) -> None:
    """The summary as a rich table: one row per metric, one column per pair (fits 80 cols)."""
    from rich.console import Console
    from rich.table import Table

    from muscle.report.render import summary_rows

    head, rows = summary_rows(compat)
    table = Table(title=f"{compat['n']} instances, {compat['kind']}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    for row in rows:
        table.add_column(row[0], overflow="fold")
    for k, label in enumerate(head[1:], start=1):
        table.add_row(label, *(row[k] for row in rows))
    console = Console()
    console.print(table)
    if out:
        console.print(f"wrote {out}/compat.json, flips.jsonl, report.md, report.html")


# --- eval -------------------------------------------------------------------------------------


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Base model folder (or hub id)."),
    task: str = typer.Option(..., "--task", help=f"{_BUILTIN_TASKS}, or a task spec .yaml/.json."),
    out: str = typer.Option(..., "--out", help="Per-instance records (JSONL)."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT LoRA adapter folder."),
    gguf_file: str | None = typer.Option(
        None, "--gguf-file", help="GGUF file name inside --model."
    ),
    data: str | None = typer.Option(None, "--data", help="Data file/folder (or dataset name)."),
    split: str | None = typer.Option(None, "--split", help="Split (default: the task's)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate the first N instances."),
    num_fewshot: int | None = typer.Option(
        None,
        "--num-fewshot",
        help="Few-shot examples per prompt (default: lm-eval's, 5 for gsm8k).",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Instances per forward pass."),
    dtype: str = typer.Option("auto", "--dtype", help="auto|float32|bfloat16|float16"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N|mps"),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.partial."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Evaluate a base model (+ adapter) on a task; write per-instance records and a summary."""
    import os

    from muscle.evaluation import evaluate_model

    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = evaluate_model(
        model,
        adapter=adapter,
        gguf_file=gguf_file,
        task=task,
        data=data,
        split=split,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        out_path=out,
        resume=resume,
        show_progress=not quiet,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        s = result.summary
        m = s["metrics"][s["primary_metric"]]
        lo, hi = m["ci95"]
        print(
            f"{s['task']['name']}: {s['primary_metric']} = {m['value']:.4f} "
            f"(95% CI {lo:.4f}-{hi:.4f}), n = {s['n']}, "
            f"{s['instances_per_second']} inst/s -> {out}"
        )
        for w in s["warnings"]:
            print(f"warning: {w}", file=sys.stderr)


# --- train ------------------------------------------------------------------------------------

_T = "Training"  # rich help panel for the options both train commands share


def _train_common(
    *,
    task: str,
    out: str,
    data: str | None,
    split: str,
    limit: int | None,
    learning_rate: float,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    eval_batch_size: int | None,
    grad_accum: int,
    warmup_steps: int,
    warmup_ratio: float | None,
    weight_decay: float,
    val_fraction: float,
    early_stopping_patience: int | None,
    seed: int,
    loss_on: str,
    max_length: int,
    save_steps: int,
    save_total_limit: int | None,
    logging_steps: int,
    resume: bool,
    report_to: str,
    dtype: str,
    device: str,
    progress: bool,
) -> dict:
    return {
        "task": task,
        "output_dir": out,
        "data": data,
        "split": split,
        "limit": limit,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": eval_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "warmup_steps": warmup_steps,
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "val_fraction": val_fraction,
        "early_stopping_patience": early_stopping_patience,
        "seed": seed,
        "loss_on": loss_on,
        "max_length": max_length,
        "save_steps": save_steps,
        "save_total_limit": save_total_limit,
        "logging_steps": logging_steps,
        "resume": resume,
        "report_to": report_to,
        "dtype": dtype,
        "device": device,
        "show_progress": progress,
    }


def _train_summary(res: dict) -> None:
    import os

    from rich.console import Console

    if os.environ.get("RANK", "0") != "0":  # under torchrun: once, from the main process
        return

    best = next((e for e in res["epochs"] if e["epoch"] == res["best_epoch"]), {})
    val = f", val CE {best['val_ce']:.4f}" if "val_ce" in best else ""
    if res["kind"] == "compat" and "val_loss" in best:
        val += f", val objective {best['val_loss']:.4f}"
    console = Console(stderr=True)
    console.print(
        f"[green]done[/green]: {res['kind']} adapter, {res['total_steps']} steps, "
        f"best epoch {res['best_epoch']}{val} -> {res['config']['output_dir']}"
    )
    for w in res.get("warnings", []):
        console.print(f"[yellow]warning[/yellow]: {w}")


_TASK_OPT = typer.Option(
    ...,
    "--task",
    help=f"Built-in task ({_BUILTIN_TASKS}) or a task spec .yaml/.json.",
    rich_help_panel=_T,
)
_OUT_OPT = typer.Option(..., "--out", "-o", help="Output folder (adapter, training.json).")
_DATA_OPT = typer.Option(None, help="Local data file/folder for the task.", rich_help_panel=_T)
_SPLIT_OPT = typer.Option(
    "train", help="Split to train on; --val-fraction of it is held out.", rich_help_panel=_T
)
_LIMIT_OPT = typer.Option(None, help="Use only the first N docs.", rich_help_panel=_T)
_LR_OPT = typer.Option(
    1e-4, "--learning-rate", "--lr", help="Peak learning rate.", rich_help_panel=_T
)
_EPOCHS_OPT = typer.Option(
    10, "--epochs", help="Epochs (an upper bound with early stopping).", rich_help_panel=_T
)
_MAXSTEPS_OPT = typer.Option(None, help="Stop after N optimizer steps.", rich_help_panel=_T)
_BS_OPT = typer.Option(4, "--batch-size", help="Per-device batch size.", rich_help_panel=_T)
_EBS_OPT = typer.Option(
    None,
    "--eval-batch-size",
    help="Validation batch size (default: --batch-size).",
    rich_help_panel=_T,
)
_GA_OPT = typer.Option(8, "--grad-accum", help="Gradient accumulation steps.", rich_help_panel=_T)
_WU_OPT = typer.Option(
    500, help="Warm-up steps, capped at 10% of all steps for small data.", rich_help_panel=_T
)
_WUR_OPT = typer.Option(
    None,
    help="Warm-up as a fraction of all steps, in [0, 1); replaces --warmup-steps.",
    rich_help_panel=_T,
)
_WD_OPT = typer.Option(0.0, help="AdamW weight decay.", rich_help_panel=_T)
_VF_OPT = typer.Option(
    0.2, help="Share of --split held out for validation (the best epoch).", rich_help_panel=_T
)
_ESP_OPT = typer.Option(
    None,
    help="Stop once the validation CE has not improved for N epochs (default: all epochs).",
    rich_help_panel=_T,
)
_SEED_OPT = typer.Option(
    42, help="Seed of the split, initialisation and data order (0 to 2**32-1).", rich_help_panel=_T
)
_LOSSON_OPT = typer.Option("all", help="Loss on 'all' tokens or the 'answer'.", rich_help_panel=_T)
_MAXLEN_OPT = typer.Option(
    512,
    help="Tokens per example; longer ones lose the prompt's start, and an answer longer than "
    "half of it its end (warned).",
    rich_help_panel=_T,
)
_SAVE_OPT = typer.Option(500, help="Checkpoint every N optimizer steps.", rich_help_panel=_T)
_STL_OPT = typer.Option(2, help="Checkpoints kept.", rich_help_panel=_T)
_LOG_OPT = typer.Option(10, help="Log the losses every N optimizer steps.", rich_help_panel=_T)
_RESUME_OPT = typer.Option(False, help="Continue from the last checkpoint in --out.")
_REPORT_OPT = typer.Option("none", help="none | tensorboard | wandb.", rich_help_panel=_T)
_DTYPE_OPT = typer.Option("auto", help="auto | float32 | bfloat16 | float16.")
_DEVICE_OPT = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps.")
_PROGRESS_OPT = typer.Option(
    True, "--progress/--no-progress", help="Progress bars (or transformers' log lines)."
)


@train_app.command("task")
def train_task_cmd(
    model: str = typer.Option(..., "--model", help="Base model folder (or hub id org/name)."),
    task: str = _TASK_OPT,
    out: str = _OUT_OPT,
    lora_r: int = typer.Option(128, help="LoRA rank.", rich_help_panel="LoRA"),
    lora_alpha: int = typer.Option(256, help="LoRA scaling alpha (> 0).", rich_help_panel="LoRA"),
    lora_dropout: float = typer.Option(0.0, help="In [0, 1).", rich_help_panel="LoRA"),
    target_modules: str = typer.Option(
        "all-linear", help="'all-linear' or comma-separated module names.", rich_help_panel="LoRA"
    ),
    data: str | None = _DATA_OPT,
    split: str = _SPLIT_OPT,
    limit: int | None = _LIMIT_OPT,
    learning_rate: float = _LR_OPT,
    epochs: int = _EPOCHS_OPT,
    max_steps: int | None = _MAXSTEPS_OPT,
    batch_size: int = _BS_OPT,
    eval_batch_size: int | None = _EBS_OPT,
    grad_accum: int = _GA_OPT,
    warmup_steps: int = _WU_OPT,
    warmup_ratio: float | None = _WUR_OPT,
    weight_decay: float = _WD_OPT,
    val_fraction: float = _VF_OPT,
    early_stopping_patience: int | None = _ESP_OPT,
    seed: int = _SEED_OPT,
    loss_on: str = _LOSSON_OPT,
    max_length: int = _MAXLEN_OPT,
    save_steps: int = _SAVE_OPT,
    save_total_limit: int | None = _STL_OPT,
    logging_steps: int = _LOG_OPT,
    resume: bool = _RESUME_OPT,
    report_to: str = _REPORT_OPT,
    dtype: str = _DTYPE_OPT,
    device: str = _DEVICE_OPT,
    progress: bool = _PROGRESS_OPT,
) -> None:
    """Train a LoRA task adapter (the paper's recipe by default).

    Saves the adapter of the best epoch by validation cross-entropy and training.json."""
    kw = dict(locals())  # the options, before the import adds names
    from muscle.training import TaskTrainingConfig, train_task_adapter

    lora = {k: kw.pop(k) for k in ("model", "lora_r", "lora_alpha", "lora_dropout")}
    tm = kw.pop("target_modules")
    lora["target_modules"] = tm if tm == "all-linear" else [m.strip() for m in tm.split(",")]
    _train_summary(train_task_adapter(TaskTrainingConfig(**lora, **_train_common(**kw))))


@train_app.command("compat")
def train_compat_cmd(
    old_model: str | None = typer.Option(None, "--old-model", help="Old base model folder."),
    old_adapter: str | None = typer.Option(
        None,
        "--old-adapter",
        help="Old task adapter; without it --old-model itself is the old task model "
        "(a fully fine-tuned or merged M1).",
    ),
    new_model: str = typer.Option(..., "--new-model", help="New base model folder."),
    new_adapter: str = typer.Option(..., "--new-adapter", help="New task adapter (the start)."),
    task: str = _TASK_OPT,
    out: str = _OUT_OPT,
    mask: str = typer.Option(
        "student-wrong",
        help="student-wrong | old-correct | old-all | token-likelihood | sequence-likelihood "
        "| focal | ensemble | none.",
        rich_help_panel="MUSCLE",
    ),
    temperature: float = typer.Option(
        2.0, help="Distillation temperature T (> 0).", rich_help_panel="MUSCLE"
    ),
    ce_weight: float | None = typer.Option(
        None,
        help="lambda in [0, 1]: lambda*L_comp + (1-lambda)*CE (default: no CE; not with "
        "--mask none or focal).",
        rich_help_panel="MUSCLE",
    ),
    kl_t2_scale: bool = typer.Option(
        True,
        "--kl-t2-scale/--no-kl-t2-scale",
        help="Scale the KL by T^2.",
        rich_help_panel="MUSCLE",
    ),
    focal_alpha: float = typer.Option(
        1.0, help="--mask focal: alpha (>= 0).", rich_help_panel="MUSCLE"
    ),
    focal_beta: float = typer.Option(
        5.0, help="--mask focal: beta (>= 0).", rich_help_panel="MUSCLE"
    ),
    cache_teachers: bool = typer.Option(
        False,
        help="Run the teachers once; store their top-k log-probs on disk.",
        rich_help_panel="MUSCLE",
    ),
    top_k: int | None = typer.Option(
        None,
        help="--cache-teachers: log-probs kept per token (default 64).",
        rich_help_panel="MUSCLE",
        show_default=False,
    ),
    teacher_dtype: str | None = typer.Option(
        None,
        help="Teachers' precision (auto|float32|bfloat16|float16; default: --dtype). bfloat16 "
        "halves the old base's memory and speeds up teacher passes on bf16 hardware.",
        rich_help_panel="MUSCLE",
    ),
    select_by: str = typer.Option(
        "ce",
        help="Best epoch by validation cross-entropy (ce, the paper's rule), by the "
        "validation objective (loss), or the last epoch (last).",
        rich_help_panel="MUSCLE",
    ),
    data: str | None = _DATA_OPT,
    split: str = _SPLIT_OPT,
    limit: int | None = _LIMIT_OPT,
    learning_rate: float = _LR_OPT,
    epochs: int = _EPOCHS_OPT,
    max_steps: int | None = _MAXSTEPS_OPT,
    batch_size: int = _BS_OPT,
    eval_batch_size: int | None = _EBS_OPT,
    grad_accum: int = _GA_OPT,
    warmup_steps: int = _WU_OPT,
    warmup_ratio: float | None = _WUR_OPT,
    weight_decay: float = _WD_OPT,
    val_fraction: float = _VF_OPT,
    early_stopping_patience: int | None = _ESP_OPT,
    seed: int = _SEED_OPT,
    loss_on: str = _LOSSON_OPT,
    max_length: int = _MAXLEN_OPT,
    save_steps: int = _SAVE_OPT,
    save_total_limit: int | None = _STL_OPT,
    logging_steps: int = _LOG_OPT,
    resume: bool = _RESUME_OPT,
    report_to: str = _REPORT_OPT,
    dtype: str = _DTYPE_OPT,
    device: str = _DEVICE_OPT,
    progress: bool = _PROGRESS_OPT,
) -> None:
    """Train the MUSCLE compatibility adapter from the new task adapter.

    It starts as a copy of that adapter and is distilled per token from the old and new task
    models (the paper's Eq. 1 by default)."""
    kw = dict(locals())  # the options, before the import adds names
    from muscle.training import CompatTrainingConfig, train_compat_adapter

    own = (
        "old_model",
        "old_adapter",
        "new_model",
        "new_adapter",
        "mask",
        "temperature",
        "ce_weight",
        "kl_t2_scale",
        "focal_alpha",
        "focal_beta",
        "cache_teachers",
        "top_k",
        "teacher_dtype",
        "select_by",
    )
    compat = {k: kw.pop(k) for k in own}
    compat["old_model"] = compat["old_model"] or ""
    if compat["top_k"] is None:  # not given: the config's default
        del compat["top_k"]
    elif not cache_teachers:
        from muscle.training.config import top_k_without_cache

        raise top_k_without_cache(compat["top_k"])
    _train_summary(train_compat_adapter(CompatTrainingConfig(**compat, **_train_common(**kw))))


# --- demo -------------------------------------------------------------------------------------


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("runs/demo", "--out", help="Output folder."),
    task: list[str] = typer.Option(
        None, "--task", help="world-qa, world-math, world-dialog (repeatable; default: all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds the world, the bases and all training."),
    size: str = typer.Option("small", "--size", help="Scenario size: small or tiny."),
    cache_dir: str | None = typer.Option(
        None,
        "--cache-dir",
        help="Folder of built scenarios (default: $MUSCLE_CACHE/scenarios, else "
        "~/.cache/muscle/scenarios).",
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", help="Tasks run side by side in N processes (default: CPU count)."
    ),
) -> None:
    """The whole MUSCLE story on the built-in scenario, offline, in minutes.

    Bases v1 -> v2, task adapters, flips, the compatibility adapter, the `none` control; prints
    the paper-style table and writes OUT/summary.json and OUT/report.html."""
    import time

    from rich.console import Console
    from rich.table import Table

    from muscle.scenarios.demo import DemoConfig, run_demo
    from muscle.scenarios.report import LEGEND, changes, none_checks, table_rows
    from muscle.scenarios.scenario import TASK_NAMES

    console = Console(stderr=True)
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        console.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/dim] {msg}")

    tasks = tuple(task) if task else TASK_NAMES
    cfg = DemoConfig(out=out, tasks=tasks, seed=seed, size=size, cache_dir=cache_dir)
    if jobs is not None:
        if jobs < 1:
            raise MuscleError(f"--jobs {jobs}: must be >= 1")
        cfg.jobs = jobs
    summary = run_demo(cfg, progress=progress)
    head, rows = table_rows(summary)
    table = Table(title=f"MUSCLE on the built-in scenario (seed {seed}; %, NFR against v1)")
    for h in head:
        table.add_column(h, justify="left" if h == "task" else "right")
    for r in rows:
        table.add_row(*r)
    out_console = Console(width=None if sys.stdout.isatty() else 200)
    out_console.print(table)
    out_console.print(LEGEND, style="dim", highlight=False)
    for line in changes(summary) + none_checks(summary):
        out_console.print(line, highlight=False)
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    print(f"wrote {out}/summary.json and {out}/report.html ({summary['seconds']['total']} s)")


def main(argv: list[str] | None = None) -> None:
    """The CLI in this process: user mistakes print one line and exit 2 (``SystemExit``),
    failed gates exit 1.  Scripts may call it; the ``muscle`` command runs :func:`run`."""
    _main(argv)


def run() -> None:
    """The ``muscle`` command (and ``python -m muscle``): :func:`main`, then, under torchrun,
    leave the process group and end at once.  The interpreter's teardown aborted one
    two-process run in a few there (``terminate called without an active exception``: 7 of 96
    evals on a busy machine with the group destroyed, with or without a barrier first; 0 of 80
    this way).  Exit handlers (e.g. wandb's) still run; every output is written by now."""
    try:
        main()
    except SystemExit as exc:
        _leave_process_group(exc.code)
        raise
    except BaseException:
        _leave_process_group(None, exit_now=False)  # a crash: its traceback still prints
        raise
    _leave_process_group(0)


def _leave_process_group(code: object, exit_now: bool = True) -> None:
    dist = getattr(sys.modules.get("torch"), "distributed", None)  # torch is not imported for it
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    dist.destroy_process_group()
    if not exit_now:
        return
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what Python's own exit would print
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _main(argv: list[str] | None) -> None:
    try:
        # Without standalone mode, click turns Ctrl-C into a *returned* 130 (and Exit codes too).
        code = app(args=argv, standalone_mode=False)
        if code == 130:
            raise typer.Abort
        if isinstance(code, int) and code:
            sys.exit(code)
    except MuscleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except GateFailed as exc:
        print(f"gate failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # empty when help was shown for missing arguments
            print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
