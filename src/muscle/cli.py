"""The ``muscle`` command line.  Thin: every command parses options and calls the library.

Heavy imports (torch, transformers) happen inside the commands so ``muscle --help`` and
``muscle compare`` stay fast.
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from muscle.errors import GateFailed, MuscleError

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


@app.callback()
def _root() -> None:
    """muscle-llm: compatible LLM updates."""


# --- compare (issue 2) -------------------------------------------------------------------

_FIELD_HELP = "Once for all files, or once per file in order. Dots reach nested fields."


@app.command("compare")
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
    slice_by: list[str] = typer.Option([], help="Categorical field for a per-slice breakdown."),
    epsilon: float = typer.Option(0.0, help="Continuous scores: flip when |D| > epsilon."),
    allow_partial: bool = typer.Option(False, help="Compare the ids common to all files."),
    max_nfr: float | None = typer.Option(
        None, help="Release gate: exit 1 when NFR(old -> new) exceeds this."
    ),
    max_rows: int = typer.Option(50, help="Regressions shown in the reports."),
) -> None:
    """Compare an old and a new model (and candidates) instance by instance: flips, NFR/PFR,
    confidence intervals, McNemar, slices; write compat.json, flips.jsonl and reports."""
    from muscle.compare import check_gate, compare_files

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
    from rich.console import Console
    from rich.table import Table

    from muscle.report.render import summary_rows

    head, rows = summary_rows(compat)
    table = Table(title=f"{compat['n']} instances, {compat['kind']}", title_justify="left")
    for h in head:
        table.add_column(h, overflow="fold", no_wrap=h == "pair")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    if out:
        console.print(f"wrote {out}/compat.json, flips.jsonl, report.md, report.html")


# --- eval (issue 3) ----------------------------------------------------------------------


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Base model folder (or hub id)."),
    task: str = typer.Option(
        ..., "--task", help="piqa, hellaswag, gsm8k, samsum, sst2, or a task spec .yaml/.json."
    ),
    out: str = typer.Option(..., "--out", help="Per-instance records (JSONL)."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT LoRA adapter folder."),
    gguf_file: str | None = typer.Option(
        None, "--gguf-file", help="GGUF file name inside --model."
    ),
    data: str | None = typer.Option(None, "--data", help="Data file/folder (or dataset name)."),
    split: str | None = typer.Option(None, "--split", help="Split (default: the task's)."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate the first N instances."),
    num_fewshot: int = typer.Option(0, "--num-fewshot", help="Few-shot examples per prompt."),
    batch_size: int = typer.Option(8, "--batch-size", help="Instances per forward pass."),
    dtype: str = typer.Option("auto", "--dtype", help="auto|float32|bfloat16|float16"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps"),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.partial."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Evaluate a base model (+ adapter) on a task; write per-instance records and a summary."""
    import os

    from muscle.evaluation import evaluate_model

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


# --- train (issue 4) ---------------------------------------------------------------------

# --- demo (issue 5) ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one line and exit 2; failed gates exit 1."""
    try:
        app(args=argv, standalone_mode=False)
    except MuscleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except GateFailed as exc:
        print(f"gate failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message.strip():  # empty when help was shown for missing arguments
            print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
