"""``python -m offloadbench.memory``: runs the command line (cli.main)."""

from ..env import exit_fast
from .cli import main

if __name__ == "__main__":
    exit_fast(main())
