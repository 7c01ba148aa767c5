"""The JSON contracts of dlsetup's output, as JSON Schemas generated from the models that produce them.

``docs/schemas/*.schema.json`` are these, committed; a test keeps them current. Regenerate with
``python -m dlsetup.contracts docs/schemas``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlsetup.facts.baseline import baseline_json_schema
from dlsetup.facts.model import facts_json_schema
from dlsetup.facts.record import record_json_schema
from dlsetup.plan.model import plan_json_schema
from dlsetup.verify.report import verify_json_schema

SCHEMAS: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "facts": ("dlsetup facts --format json", facts_json_schema),
    "plan": ("dlsetup plan --os ... --format json (one plan; per host under hosts.NAME)", plan_json_schema),
    "verify": ("dlsetup verify --format json", verify_json_schema),
    "record": ("/etc/ansible/facts.d/dlsetup.fact, the record a provision leaves on the host", record_json_schema),
    "baseline": (
        "/etc/ansible/facts.d/dlsetup_baseline.fact, the hardware of the last verified run",
        baseline_json_schema,
    ),
}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one contract (``facts``, ``plan`` or ``verify``), with its title and draft."""
    command, build = SCHEMAS[name]
    generated = build()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"generated from dlsetup's models by `python -m dlsetup.contracts docs/schemas`: {command}",
        **generated,
    }


def render(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("docs/schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for name in SCHEMAS:
        (folder / f"{name}.schema.json").write_text(render(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
