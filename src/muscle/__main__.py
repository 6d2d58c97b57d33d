"""``python -m muscle`` runs the CLI."""

from muscle.cli import run

if __name__ == "__main__":
    run()
