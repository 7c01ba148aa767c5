"""Read the compatibility data files and validate them: each row against its schema, then the rows against each
other. :func:`load_compat_data` reads the files shipped in the package once and caches the result;
:func:`load_compat_data_from` reads another folder (tests use it to prove that bad data is refused)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlsetup.errors import DlsetupError
from dlsetup.plan.consistency import consistency_problems
from dlsetup.plan.schema import Architecture, Chip, CompatData

_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DATA_FILES = ("architectures", "branches", "gpus", "cuda", "frameworks", "systems", "machines")


def _shipped() -> Traversable:
    return resources.files("dlsetup.plan") / "data"


def _read_folder(folder: Path | Traversable) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in DATA_FILES:
        generated = folder / f"{name}.json"
        if generated.is_file():  # generated data (the GPU catalogue) is JSON: it loads ten times faster
            loaded = json.loads(generated.read_text(encoding="utf-8"))
        else:
            text = (folder / f"{name}.yaml").read_text(encoding="utf-8")
            loaded = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: the C one when PyYAML has it
        if not isinstance(loaded, Mapping):
            raise DlsetupError(f"compatibility data {name} is not a mapping")
        for key, value in loaded.items():
            if key in merged:
                raise DlsetupError(f"compatibility data: key {key!r} appears in more than one file")
            merged[key] = value
    return merged


def _validate(raw: Mapping[str, Any], where: str) -> CompatData:
    try:
        data = CompatData.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise DlsetupError(f"compatibility data in {where} is invalid: " + "; ".join(lines)) from exc
    problems = list(consistency_problems(data))
    if problems:
        raise DlsetupError(f"compatibility data in {where} is invalid: " + "; ".join(problems))
    return data


def load_compat_data_from(folder: Path) -> CompatData:
    """Read and validate the data files in ``folder`` (same names as the shipped ones)."""
    return _validate(_read_folder(folder), str(folder))


@cache
def load_compat_data() -> CompatData:
    """The shipped compatibility data, validated once per process."""
    return _validate(_read_folder(_shipped()), "dlsetup/plan/data")


def raw_rows() -> dict[str, Any]:
    """The shipped data as plain YAML structures (for data tests that walk every row)."""
    return _read_folder(_shipped())


def load_placement(folder: Path | Traversable | None = None) -> tuple[tuple[Architecture, ...], tuple[Chip, ...]]:
    """Only the architectures and chips of ``architectures.yaml``: what places a GPU, without the catalogue (the
    catalogue generator reads these before the catalogue it writes exists)."""
    text = ((folder or _shipped()) / "architectures.yaml").read_text(encoding="utf-8")
    raw = yaml.load(text, Loader=_YAML_LOADER)
    try:
        return (
            tuple(Architecture.model_validate(row) for row in raw["architectures"]),
            tuple(Chip.model_validate(row) for row in raw["chips"]),
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise DlsetupError(f"compatibility data architectures.yaml is invalid: {exc}") from None
