"""python -m offloadbench.figures: see the package's docstring."""

import sys

from . import main

sys.exit(main())
