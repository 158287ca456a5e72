"""Reading a DeepSpeed JSON config: :func:`read` parses the file and refuses a key given twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DeepSpeedConfigError


def read(path: str | Path) -> dict:
    """The config in ``path`` as a dict; a missing file, invalid JSON or a key given twice is refused."""
    path = Path(path)
    if not path.is_file():
        raise DeepSpeedConfigError(f"DeepSpeed config {path} does not exist")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        seen = [k for k, _ in pairs]
        twice = sorted({k for k in seen if seen.count(k) > 1})
        if twice:
            # json.load keeps the last one silently (so does Trainer, which reads the file with json.load)
            raise DeepSpeedConfigError(f"DeepSpeed config {path} sets {', '.join(twice)} twice in one mapping")
        return dict(pairs)

    try:
        ds = json.loads(path.read_text(), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"DeepSpeed config {path} is not valid JSON: {err}") from err
    if not isinstance(ds, dict):
        raise DeepSpeedConfigError(f"DeepSpeed config {path} must hold a mapping of keys, not {type(ds).__name__}")
    return ds
