"""The errors a user can act on: each message names the config key or file and what would be right."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what would be right."""


class PreflightError(ConfigError):
    """A run that cannot work, found by the training job before any training starts."""
