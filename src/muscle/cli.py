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

# --- eval (issue 3) ----------------------------------------------------------------------

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
