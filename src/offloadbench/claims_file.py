"""The claims file (configs/claims.yaml): its schema and the summary metrics it may name.

Checked with the config before any job, so a typo stops the workflow at the start rather than
at the end; offloadbench.claims reads the checked claims to give each its verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from .errors import ConfigError
from .io import read_yaml
from .spec import REPO


def load_claims(path: str | Path) -> list[dict]:
    """The claims file, checked against its schema and the summary's metrics (ConfigError naming
    the claim and key otherwise), so a typo stops the workflow before any job rather than at the end."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"claims file {path} does not exist")
    doc = read_yaml(path)
    schema = read_yaml(REPO / "workflow" / "schemas" / "claims_config.schema.yaml")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"claims file {path}: key {where}: {err.message}")
    summary = json.loads((REPO / "workflow" / "schemas" / "summary.schema.json").read_text())
    numeric = sorted(
        k for k, v in summary["properties"].items() if {"number", "integer"} & set(_types(v.get("type", [])))
    )
    ids = [c["id"] for c in doc["claims"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"claims file {path}: claim ids must be unique; repeated: {', '.join(dupes)}")
    for claim in doc["claims"]:
        for metric in claim.get("metrics", []):
            if metric not in numeric:
                raise ConfigError(
                    f"claims file {path}: claim {claim['id']}: metric {metric!r} is not a numeric field of "
                    f"summary.json; use one of {', '.join(numeric)}"
                )
    return doc["claims"]


def _types(t) -> list[str]:
    return [t] if isinstance(t, str) else list(t)
