"""The error every part of :mod:`offloadbench.dsconfig` raises for a config that would not do what it says."""

from __future__ import annotations


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed config that would not do what it says; the message names the file, each key and the fix."""
