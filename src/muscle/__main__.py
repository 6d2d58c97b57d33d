"""``python -m muscle`` runs the CLI."""

from muscle.cli import main

if __name__ == "__main__":
    main()
