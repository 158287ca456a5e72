"""A config's keys against the ones DeepSpeed reads: :func:`check_keys`, :func:`normalise`, :func:`get`.

:func:`check_keys` refuses every key DeepSpeed does not read as written: unknown or misspelled
(with the closest valid name), deprecated or outdated (with the current name), at the wrong level,
removed, an accelerate setting instead of a DeepSpeed key, or an ``"auto"`` that nobody fills.
:func:`normalise` writes every key under its canonical name (``max_live_parameters`` becomes
``stage3_max_live_parameters``), :func:`get` reads one with DeepSpeed's default.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

from .auto import OFFLOADBENCH_AUTO, TRAINER_AUTO, auto_paths
from .errors import DeepSpeedConfigError
from .keytree import NO_DEFAULT, Key, canonical_path, lookup, resolve_key, schema

# ---------------------------------------------------------------------------------------------
# Checking the keys


def _accelerate_keys() -> dict[str, str]:
    """accelerate's DeepSpeed launch settings (the deepspeed_config: block of an accelerate config
    YAML, `accelerate launch --zero3_init_flag ...`): name -> what to write in a DeepSpeed JSON."""
    import ast
    import inspect

    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DeepSpeedPlugin

    mapping: dict[str, str] = {}
    try:  # DeepSpeedPlugin.__post_init__ maps its settings to DeepSpeed keys in a local dict
        tree = ast.parse(inspect.getsource(DeepSpeedPlugin.__post_init__).strip())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "plugin_to_config_mapping" for t in node.targets
            ):
                mapping = ast.literal_eval(node.value)
    except (OSError, TypeError, ValueError, SyntaxError):
        pass
    out = {}
    for group in launch_command_parser()._action_groups:
        if group.title == "DeepSpeed Arguments":
            for action in group._group_actions:
                name = action.dest
                if name in mapping:
                    out[name] = f"in a DeepSpeed JSON, write {mapping[name]}"
                else:
                    out[name] = f"accelerate: {' '.join((action.help or '').split())}"
    return out


def check_keys(ds: dict, path: str | Path) -> None:
    """Refuse every key the installed DeepSpeed does not read as written, all of them at once.

    Each line names the dotted key and the fix: the closest valid name for a misspelling, the
    current name for a deprecated or outdated key, where a key at the wrong level belongs, the
    DeepSpeed key for an accelerate setting, DeepSpeed's message for a removed feature, and a
    value for an ``"auto"`` that neither Trainer nor offloadbench fills. Aliases DeepSpeed accepts
    (``max_live_parameters`` for ``stage3_max_live_parameters``) pass.
    """
    s = schema()
    problems: list[str] = []
    flagged: list[str] = []  # dotted keys already refused: their "auto" values are not reported again
    accelerate: dict[str, str] | None = None

    def refuse(dotted: str, message: str) -> None:
        problems.append(f"{dotted}: {message}")
        flagged.append(dotted)

    def unknown(name: str, dotted: str, value: Any, section: dict[str, Key], pydantic: bool) -> None:
        nonlocal accelerate
        if "." not in dotted:
            accelerate = _accelerate_keys() if accelerate is None else accelerate
            if name in accelerate:
                refuse(
                    dotted,
                    f"an accelerate launch setting (`accelerate launch --{name}`, the deepspeed_config: block of an "
                    f"accelerate config YAML), not a DeepSpeed key; DeepSpeed ignores it ({accelerate[name]})",
                )
                return
        close = difflib.get_close_matches(name, list(section), n=1, cutoff=0.8)
        if close:
            key = section[close[0]]
            hint = f", itself deprecated: write {key.deprecated}" if key.deprecated else ""
            refuse(dotted, f"unknown key; did you mean {key.path}{hint}?")
            return
        others = s.elsewhere.get(name, [])
        if others:
            refuse(dotted, f"not read at this level; DeepSpeed reads it as {' or '.join(k.path for k in others[:3])}")
            if len(others) == 1 and others[0].children is not None and isinstance(value, dict):
                walk(value, others[0].children, dotted, others[0].pydantic)
            return
        effect = "refuses it when the engine starts" if pydantic else "ignores it silently"
        refuse(dotted, f"not a DeepSpeed {s.version} key; DeepSpeed {effect} (delete it: it does nothing)")

    def walk(node: dict, section: dict[str, Key], prefix: str, pydantic: bool) -> None:
        seen: dict[int, str] = {}
        for name, value in node.items():
            dotted = f"{prefix}.{name}" if prefix else name
            key = section.get(name)
            if key is None:
                unknown(name, dotted, value, section, pydantic)
                continue
            if id(key) in seen:
                refuse(dotted, f"set twice in one section, as {seen[id(key)]} and as {name}")
            seen[id(key)] = name
            if key.removed:
                refuse(dotted, f"removed from DeepSpeed: {key.removed}")
            elif key.deprecated:
                refuse(dotted, f"outdated name ({key.why}); write {key.deprecated} instead")
            elif key.children is not None:
                if isinstance(value, dict):
                    walk(value, key.children, dotted, key.pydantic)
                elif value is not None:
                    refuse(dotted, f"must be a mapping of keys, not {json.dumps(value)}")

    walk(ds, s.top, "", False)

    filled = set(TRAINER_AUTO) | set(OFFLOADBENCH_AUTO)
    for dotted in auto_paths(ds):
        if dotted in filled or any(dotted == f or dotted.startswith(f + ".") for f in flagged):
            continue
        canonical = canonical_path(dotted)
        if canonical in filled:
            refuse(
                dotted,
                f'"auto" is filled by Trainer only under the name {canonical}; under this name DeepSpeed drops it '
                f"and uses its default{_default_text(canonical)}. Write {canonical}",
            )
        else:
            refuse(
                dotted,
                f'"auto" here is filled by neither Trainer nor offloadbench; DeepSpeed would use its default'
                f"{_default_text(canonical)} or fail. Write a value",
            )
    if problems:
        raise DeepSpeedConfigError(
            f"DeepSpeed config {path}: {len(problems)} key(s) DeepSpeed {s.version} does not read as written:\n  "
            + "\n  ".join(problems)
        )


def _default_text(canonical: str | None) -> str:
    key = resolve_key(canonical) if canonical else None
    if key is None or key.default is NO_DEFAULT:
        return ""
    return f" ({json.dumps(key.default, default=str)})"


# ---------------------------------------------------------------------------------------------
# Canonical names and defaults


def normalise(ds: dict) -> dict:
    """A copy with every key DeepSpeed knows under its canonical spelling (the pydantic alias, the
    long ``stage3_*`` names of the DeepSpeed docs and of Trainer's "auto" keys) and whole-number
    floats of integer keys as ints (1e9 -> 1000000000). Unknown keys are kept as they are."""

    def walk(node: dict, section: dict[str, Key] | None) -> dict:
        out = {}
        for name, value in node.items():
            key = section.get(name) if section is not None else None
            if key is None or key.deprecated or key.removed:
                out[name] = copy.deepcopy(value)
                continue
            if isinstance(value, dict) and key.children is not None:
                value = walk(value, key.children)
            elif key.is_int and isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                value = copy.deepcopy(value)
            out[key.name] = value
        return out

    return walk(ds, schema().top)


def get(ds: dict, dotted: str, default: Any = NO_DEFAULT) -> Any:
    """The value of ``dotted`` (any spelling DeepSpeed accepts) in ``ds``, else DeepSpeed's default
    (from its pydantic models and AIO_DEFAULT_DICT); ``default`` where DeepSpeed has none to read."""
    canonical = canonical_path(dotted)
    if canonical is None:
        raise KeyError(f"{dotted} is not a key DeepSpeed {schema().version} reads")
    node, last = lookup(normalise(ds), canonical)
    if node is not None and last in node:
        return node[last]
    key = resolve_key(canonical)
    if key is not None and key.default is not NO_DEFAULT:
        return key.default
    if default is not NO_DEFAULT:
        return default
    raise KeyError(f"{dotted} is not set and DeepSpeed {schema().version} has no default for it here")
