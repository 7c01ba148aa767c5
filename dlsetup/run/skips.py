"""Why Ansible skipped a task: the ``when`` that was false, read from the task file it names.

ansible-runner's skipped events carry no result (so no ``false_condition``), only the task's ``task_path``
(``.../roles/nvidia_driver/tasks/repo.yml:16``). The condition is that of the blocks around it and its own
(ANDed, as Ansible does), else that of the ``import_tasks`` that brought its file in (followed up to the role's
``main.yml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

_BLOCKS = ("block", "rescue", "always")
_IMPORTS = ("ansible.builtin.import_tasks", "import_tasks", "ansible.builtin.include_tasks", "include_tasks")


@dataclass(frozen=True)
class _Task:
    line: int  # 1-based, as task_path has it
    when: str  # its own condition, or its block's; "" when none
    imports: str  # the file an import_tasks/include_tasks brings in; "" when none


def _text(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return " and ".join(_text(item) for item in node.value)
    return str(getattr(node, "value", "")).strip()


def _walk(node: yaml.Node, inherited: str, found: list[_Task]) -> None:
    if not isinstance(node, yaml.SequenceNode):
        return
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            continue
        keys = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        # Ansible ANDs a task's condition with its block's: both are said, the block's first
        when = " and ".join(c for c in (inherited, _text(keys["when"]) if "when" in keys else "") if c)
        imports = next((_text(keys[k]) for k in _IMPORTS if k in keys), "")
        found.append(_Task(item.start_mark.line + 1, when, imports))
        for block in _BLOCKS:
            if block in keys:
                _walk(keys[block], when, found)


@cache
def _tasks(path: str) -> tuple[_Task, ...]:
    try:
        root = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return ()
    found: list[_Task] = []
    if root is not None:
        _walk(root, "", found)
    return tuple(found)


def skip_reason(task_path: str, _seen: frozenset[str] = frozenset()) -> str:
    """The condition that skipped the task at ``task_path`` (``file:line``); ``""`` when it cannot be told."""
    file, _, line = task_path.rpartition(":")
    if not file or not line.isdigit() or file in _seen:
        return ""
    task = next((t for t in _tasks(file) if t.line == int(line)), None)
    if task is not None and task.when:
        return task.when
    name = Path(file).name
    for other in sorted(Path(file).parent.glob("*.yml")):
        for importer in _tasks(str(other)):
            if importer.imports and Path(importer.imports).name == name:
                return importer.when or skip_reason(f"{other}:{importer.line}", _seen | {file})
    return ""
