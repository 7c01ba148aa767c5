"""The JSON contracts: the committed schemas are the ones the models generate, and the documented examples (the
Facts JSON in docs/architecture.md, every file in docs/examples) validate against them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dlsetup import contracts
from dlsetup.facts.baseline import HardwareBaseline
from dlsetup.facts.model import HostFacts, hosts_from_dict
from dlsetup.facts.record import HostRecord
from dlsetup.plan.model import Plan
from dlsetup.plan.request import request_offline
from dlsetup.plan.resolve import resolve_stack
from dlsetup.verify.report import VerifyReport

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "docs" / "schemas"
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.json"))


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(name: str, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(document)]


@pytest.mark.parametrize("name", list(contracts.SCHEMAS))
def test_committed_schema_is_the_generated_one(name: str) -> None:
    committed = (SCHEMAS / f"{name}.schema.json").read_text()
    assert committed == contracts.render(name), f"regenerate: python -m dlsetup.contracts docs/schemas ({name})"


def test_every_example_has_a_contract() -> None:
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        assert path.name.split("-")[0] in contracts.SCHEMAS, path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_their_schema_and_model(path: Path) -> None:
    name = path.name.split("-")[0]
    document = json.loads(path.read_text())
    assert errors(name, document) == []
    # and the models read them back unchanged
    if name == "facts":
        assert {"hosts": {n: h.to_dict() for n, h in hosts_from_dict(document).items()}} == document
    elif name == "plan":
        assert Plan.from_dict(document).to_dict() == document
    elif name == "verify":
        assert VerifyReport.from_dict(document).to_dict() == document
    elif name == "baseline":
        baseline = HardwareBaseline.parse(document)
        assert baseline is not None and baseline.to_dict() == document
    else:
        record = HostRecord.parse(document)
        assert record is not None and record.to_dict() == document


def test_the_documented_facts_json_validates() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```json\n(.*?)```", text[text.index("## Facts JSON") :], re.DOTALL)
    assert block
    assert errors("facts", json.loads(block.group(1))) == []


def test_the_schemas_refuse_what_the_models_refuse() -> None:
    document = json.loads((REPO / "docs" / "examples" / "facts-2x1080ti.json").read_text())
    document["hosts"]["NAME"]["gpus"][0]["pci_bus_id"] = "00000000:01:00.0"  # nvidia-smi's form, not the contract's
    assert errors("facts", document)
    document["hosts"]["NAME"]["gpus"][0]["pci_bus_id"] = "0000:01:00.0"
    document["hosts"]["NAME"]["driver"]["surprise"] = True
    assert errors("facts", document)


@pytest.mark.parametrize(
    ("os_name", "gpus", "machine"),
    [
        ("ubuntu-24.04", ["GTX 1080 Ti", "GTX 1080 Ti"], None),
        ("debian-13", ["RTX 4090"], None),
        ("debian-12", ["RTX 5090"], None),
        ("ubuntu-22.04", [], "XPS 13 9370"),
        ("ubuntu-24.04", ["10de:1c8c"], "XPS 15 9570"),
    ],
)
def test_resolved_plans_follow_the_schema(os_name: str, gpus: list[str], machine: str | None) -> None:
    plan = resolve_stack(request_offline(os_name, gpus, machine))
    assert errors("plan", plan.to_dict()) == []


def test_a_record_of_a_plan_follows_the_schema() -> None:
    facts = HostFacts.from_dict(
        json.loads((REPO / "docs" / "examples" / "facts-2x1080ti.json").read_text())["hosts"]["NAME"]
    )
    plan = resolve_stack(request_offline("debian-12", ["GTX 1080 Ti"]))
    assert errors("record", HostRecord.of(facts, plan.to_dict()).to_dict()) == []
