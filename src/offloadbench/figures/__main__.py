"""python -m offloadbench.figures: see the package's docstring."""

from ..env import exit_fast
from . import main

exit_fast(main())
