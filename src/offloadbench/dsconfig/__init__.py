"""The one reader of DeepSpeed JSON configs: keys checked against DeepSpeed, "auto" filled as Trainer does.

Authors bring the DeepSpeed config they trained with (LLaMA-Factory, Axolotl, the transformers docs).
DeepSpeed ignores unknown top-level keys silently, and Hugging Face Trainer fills ``"auto"`` only
under exact key names, so a config can look right and still not do what it says. The sub-modules,
each importing only those above it:

- :mod:`.errors`: :class:`DeepSpeedConfigError`, raised by all of them;
- :mod:`.io`: :func:`read` parses the file (duplicate keys refused);
- :mod:`.keytree`: :func:`schema`, every key the installed DeepSpeed reads, read from DeepSpeed itself;
- :mod:`.auto`: :func:`resolve_auto` fills every ``"auto"`` with the value Trainer (and accelerate,
  and offloadbench for its own two extensions) would give it (:func:`trainer_values`,
  :func:`hidden_size_values`, :data:`TRAINER_AUTO`, :data:`OFFLOADBENCH_AUTO`);
- :mod:`.keys`: :func:`check_keys` refuses every key DeepSpeed does not read as written, with the
  fix; :func:`normalise` writes every key under its canonical name, :func:`get` reads one with
  DeepSpeed's default;
- :mod:`.run`: :func:`check_against_run` refuses settings that contradict the run's spec, with the
  fix; :func:`validate` runs DeepSpeed's own config parser on a resolved config;
  :func:`check_writable` checks a folder the run will write to.

Importing this package imports no DeepSpeed, torch or transformers (that takes seconds); the first
check does.
"""

from .auto import (
    ACCELERATE_GATHER,
    OFFLOADBENCH_AUTO,
    TRAINER_AUTO,
    hidden_size_values,
    resolve_auto,
    trainer_values,
)
from .errors import DeepSpeedConfigError
from .io import read
from .keys import check_keys, get, normalise
from .keytree import schema
from .run import check_against_run, check_writable, validate

__all__ = [
    "ACCELERATE_GATHER",
    "OFFLOADBENCH_AUTO",
    "TRAINER_AUTO",
    "DeepSpeedConfigError",
    "check_against_run",
    "check_keys",
    "check_writable",
    "get",
    "hidden_size_values",
    "normalise",
    "read",
    "resolve_auto",
    "schema",
    "trainer_values",
    "validate",
]
