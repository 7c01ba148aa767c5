"""``-e/--extra-vars`` as ``ansible-playbook`` takes them (``key=value ...``, a YAML or JSON mapping, ``@file``),
checked against what the roles accept: the options of each role's ``meta/argument_specs.yml``, by name and type.

A variable the plan sets (``nvidia_driver_branch`` ...) is refused: an extra var outranks every other source in
Ansible, so it would replace the plan behind its back; the plan is steered with ``--pin`` and the source options.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dlsetup import paths
from dlsetup.errors import ConfigError
from dlsetup.plan.sources import PLAN_OWNED

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@cache
def role_options() -> dict[str, tuple[str, str]]:
    """Every option the roles accept: name → (role, type), from their ``main`` argument specs."""
    options: dict[str, tuple[str, str]] = {}
    for spec in sorted(paths.roles_dir().glob("*/meta/argument_specs.yml")):
        role = spec.parent.parent.name
        main = (yaml.safe_load(spec.read_text()) or {}).get("argument_specs", {}).get("main", {})
        for name, option in (main.get("options") or {}).items():
            options[name] = (role, str((option or {}).get("type", "str")))
    return options


def _load(value: str) -> dict[str, Any]:
    """One ``-e`` value as a mapping."""
    text = value.strip()
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"-e {value}: {path} cannot be read ({exc.strerror or exc})") from None
        where = str(path)
    elif text.startswith(("{", "---")) or ("\n" in text and ":" in text):
        where = "the value"
    else:  # key=value key2=value2, as Ansible's parse_kv
        pairs: dict[str, Any] = {}
        for word in shlex.split(text):
            key, sep, item = word.partition("=")
            if not sep or not key:
                raise ConfigError(f"-e {value!r}: expected key=value, a YAML/JSON mapping or @FILE")
            pairs[key] = item
        return pairs
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"-e {value[:60]!r}: {where} is not YAML or JSON{place}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"-e {value[:60]!r}: {where} must be a mapping of variables, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


def _typed(name: str, value: Any, kind: str) -> Any:
    """``value`` as the role's option type says; strings (``key=value`` gives only strings) converted as Ansible's
    argument spec validation converts them."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif kind in ("str", "path"):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif kind == "list":
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
    elif kind == "dict":
        if isinstance(value, Mapping):
            return dict(value)
    else:  # raw, and any type a role may declare that is not checked here
        return value
    article = "an" if kind[0] in "aeiou" else "a"
    raise ConfigError(f"-e {name}: expected {article} {kind}, got {value!r}")


def parse_extra_vars(values: Sequence[str]) -> dict[str, Any]:
    """The ``-e`` values, merged in order (a later one wins, as in Ansible), each checked against the roles."""
    merged: dict[str, Any] = {}
    for value in values:
        merged.update(_load(value))
    options = role_options()
    checked: dict[str, Any] = {}
    for name, value in merged.items():
        if name in PLAN_OWNED:
            raise ConfigError(f"-e {name}: set by dlsetup's plan (an extra var would replace it); {PLAN_OWNED[name]}")
        if name not in options:
            close = difflib.get_close_matches(name, options, n=3)
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"the roles' variables are in their meta/argument_specs.yml under {paths.roles_dir()}")  # fmt: skip
            raise ConfigError(f"-e {name}: no role of dlsetup takes this variable; {hint}")
        checked[name] = _typed(name, value, options[name][1])
    return checked
