"""The one place that reads the user's inventory: Ansible's own inventory API, in a child process
(:mod:`dlsetup.run.inventory_child`), asked for the hosts that HOST patterns and ``--limit`` select.

Every inventory Ansible reads works: INI, YAML, directories with ``group_vars/`` and ``host_vars/``, scripts,
plugin configurations, vaulted values. Patterns are Ansible's (``rigs:!rig-2``, ``rig-*``, ``rigs[0]``,
``~regex``). Only the selected hosts' variables come back, so what dlsetup reads and keeps grows with the
selection, not with the inventory; vaulted values arrive decrypted over a pipe and are never written to a file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dlsetup import paths
from dlsetup.config.targets import Selection, VaultOptions
from dlsetup.errors import ConfigError
from dlsetup.run import signals


def select(
    path: Path,
    patterns: Sequence[str],
    *,
    limit: str | None = None,
    vault: VaultOptions | None = None,
) -> Selection:
    """Ask Ansible which hosts of the inventory ``path`` the ``patterns`` select (within ``limit``); a broken
    inventory, a bad pattern or a vault that cannot be opened is a :class:`ConfigError` naming its cause."""
    vault = vault or VaultOptions()
    for secret in vault.password_files:
        if not secret.is_file():
            raise ConfigError(f"--vault-password-file {secret}: no such file")
    request = {
        "sources": [str(path.resolve())],
        "patterns": list(patterns),
        "limit": limit,
        "vault_password": vault.password,
        "vault_password_files": [str(p.resolve()) for p in vault.password_files],
    }
    env = {
        **os.environ,
        **paths.ansible_env(),
        "ANSIBLE_VERBOSITY": "0",
        "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore",  # a pattern that selects nothing is dlsetup's to report
    }
    rc, out, err = signals.run_child(
        [sys.executable, "-m", "dlsetup.run.inventory_child"],
        what=f"reading the inventory {path}",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin_text=json.dumps(request),
    )
    try:
        reply = json.loads(out or "")
    except json.JSONDecodeError:  # Ansible did not start (an ansible.cfg that does not parse): its exception says why
        why = _exception_line(err) or f"reading the inventory ended with exit code {rc} and no answer"
        raise ConfigError(f"Ansible cannot start: {why}") from None
    if "error" in reply:
        about = reply.get("about", "inventory")
        if about == "pattern":
            raise ConfigError(f"host pattern of {', '.join(map(repr, patterns))}: {reply['error']}")
        if about == "vault":
            raise ConfigError(f"inventory {path}: {reply['error']}")
        raise ConfigError(f"invalid inventory {path}: {reply['error']}")
    return Selection(
        matched=tuple(tuple(names) for names in reply["matched"]),
        matched_all=tuple(tuple(names) for names in reply["matched_all"]),
        hostvars=reply["hostvars"],
        empty_groups=frozenset(reply["empty_groups"]),
        vaulted=tuple(reply.get("vaulted") or ()),
        plugins=tuple(reply.get("plugins") or ()),
        unmatched_parts=tuple(tuple(names) for names in reply.get("unmatched_parts") or ()),
    )


_EXCEPTION_LINE = re.compile(r"^[\w.]*(?:Error|Exception)\w*: (?P<message>.+)$")


def _exception_line(text: str | None) -> str:
    """The message of the last exception in a traceback (``ansible.errors.AnsibleOptionsError: Error ...``)."""
    found = [m["message"] for line in (text or "").splitlines() if (m := _EXCEPTION_LINE.match(line.strip()))]
    return found[-1].strip() if found else ""
