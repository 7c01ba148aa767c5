"""Turn HOST arguments and an optional inventory into the hosts one run works on.

A HOST argument is one of:
  * ``localhost``: this machine, local connection, no inventory needed;
  * ``[user@]address[:port]``: an ad-hoc SSH host (host keys are checked against known_hosts);
  * a host or group name from ``-i INVENTORY``.
Everything is resolved and validated before any host is touched.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsetup.errors import ConfigError

VAULT_PROMPT = r"^Vault password.*:\s*?$"
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_ADHOC = re.compile(
    r"^(?:(?P<user>[a-z_][a-z0-9_.-]*)@)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d{1,5}))?$"
)


@dataclass(frozen=True)
class Target:
    """One managed host as the runner inventory will name it."""

    name: str
    hostvars: Mapping[str, Any] = field(default_factory=dict)
    from_inventory: bool = False

    @property
    def is_local(self) -> bool:
        return self.hostvars.get("ansible_connection") == "local"


@dataclass(frozen=True)
class VaultOptions:
    """How Ansible opens vaulted values: a password asked once by dlsetup (``--ask-vault-pass``), kept in memory
    only, and password files (``--vault-password-file``, a file or an executable that prints it)."""

    password: str | None = field(default=None, repr=False)  # never in a repr, a log or a traceback
    password_files: tuple[Path, ...] = ()

    def __bool__(self) -> bool:
        return self.password is not None or bool(self.password_files)

    def cmdline(self) -> list[str]:
        """ansible-playbook's options for these secrets (the asked password goes to its prompt)."""
        args = [arg for path in self.password_files for arg in ("--vault-password-file", str(path.resolve()))]
        return [*args, "--ask-vault-pass"] if self.password is not None else args

    def prompts(self) -> dict[str, str]:
        """ansible-runner's answers to ansible-playbook's prompts (pexpect, never a file)."""
        return {VAULT_PROMPT: self.password} if self.password is not None else {}


@dataclass(frozen=True)
class Connection:
    """How the runs reach and report on the hosts, as ansible-playbook's options: ``-f/--forks`` (None: one per
    host, at least 5), ``-u/--user`` (the remote user where the inventory names none), ``-v`` (Ansible's
    verbosity, 0-4)."""

    forks: int | None = None
    user: str | None = None
    verbosity: int = 0

    def __post_init__(self) -> None:
        if self.forks is not None and self.forks < 1:
            raise ConfigError(f"--forks must be at least 1, got {self.forks}")
        if self.user is not None and (not self.user.strip() or any(c.isspace() or c in ":/" for c in self.user)):
            raise ConfigError(f"--user {self.user!r} is not a user name")
        if not 0 <= self.verbosity <= 6:
            raise ConfigError(f"-v may be given up to 6 times (-vvvvvv), as Ansible's, got {self.verbosity}")


@dataclass(frozen=True)
class HostArgs:
    """What a command is told to work on: its HOST arguments (host patterns, with ``-i``), the inventory, the
    ``--limit`` pattern and how to open the inventory's vaulted values."""

    hosts: tuple[str, ...]
    inventory: Path | None = None
    limit: str | None = None
    vault: VaultOptions = field(default_factory=VaultOptions)
    connection: Connection = field(default_factory=Connection)


@dataclass(frozen=True)
class Selection:
    """What the inventory answered (:func:`dlsetup.run.inventory.select`): per HOST pattern the hosts it selects
    within ``--limit`` (``matched``) and without it (``matched_all``), in inventory order; the variables of every
    selected host as Ansible merges them; the groups without a host; the values that were vaulted (secrets,
    whatever their names); the inventory plugins in the order Ansible tried them."""

    matched: tuple[tuple[str, ...], ...]
    matched_all: tuple[tuple[str, ...], ...]
    hostvars: Mapping[str, Mapping[str, Any]]
    empty_groups: frozenset[str] = frozenset()
    vaulted: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    # per HOST pattern, the names of its comma list that select nothing in the inventory (localhost, addresses)
    unmatched_parts: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class TargetSet:
    """The resolved hosts plus the inventory sources the runner needs."""

    targets: tuple[Target, ...]
    inventory_path: Path | None
    # variables of the selected inventory hosts (as Ansible merges them, vaulted ones decrypted), by host name
    inventory_hostvars: Mapping[str, Mapping[str, Any]]
    vault: VaultOptions = field(default_factory=VaultOptions)
    vaulted: tuple[str, ...] = ()  # the decrypted vaulted values: secrets for redaction
    inventory_plugins: tuple[str, ...] = ()  # the order the runs give Ansible (ANSIBLE_INVENTORY_ENABLED)
    connection: Connection = field(default_factory=Connection)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def adhoc_inventory(self) -> dict[str, Any]:
        """A YAML-shaped inventory for the hosts that do not come from the user's inventory."""
        hosts = {t.name: dict(t.hostvars) for t in self.targets if not t.from_inventory}
        return {"all": {"hosts": hosts}} if hosts else {}

    def inventory_for_all(self) -> dict[str, Any]:
        """One inventory naming exactly these hosts with their merged variables (for testinfra); ``-u`` as the
        user of the hosts whose variables name none, as ansible-playbook's remote user is."""
        hosts = {t.name: dict(self.hostvars(t.name)) for t in self.targets}
        if self.connection.user is not None:
            for hostvars in hosts.values():
                if "ansible_user" not in hostvars and hostvars.get("ansible_connection") != "local":
                    hostvars["ansible_user"] = self.connection.user
        return {"all": {"hosts": hosts}}

    def subset(self, names: Sequence[str]) -> TargetSet:
        """The same inventory, limited to ``names`` (in this set's order)."""
        kept = tuple(t for t in self.targets if t.name in names)
        return dataclasses.replace(self, targets=kept)

    def hostvars(self, name: str) -> Mapping[str, Any]:
        for target in self.targets:
            if target.name == name:
                merged = dict(self.inventory_hostvars.get(name, {}))
                merged.update(target.hostvars)
                return merged
        raise KeyError(name)


def local_target() -> Target:
    # ansible_playbook_python makes the local module run with dlsetup's own interpreter, as Ansible's
    # implicit localhost does.
    return Target(
        "localhost",
        {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
    )


def parse_adhoc(spec: str) -> Target:
    """Parse ``[user@]host[:port]`` into an SSH target, or raise ConfigError."""
    match = _ADHOC.match(spec)
    if not match:
        raise ConfigError(f"invalid host {spec!r}: expected localhost, [user@]host[:port] or an inventory name")
    host = match.group("host").strip("[]")
    hostvars: dict[str, Any] = {"ansible_host": host}
    if match.group("user"):
        hostvars["ansible_user"] = match.group("user")
    if match.group("port"):
        port = int(match.group("port"))
        if not 0 < port < 65536:
            raise ConfigError(f"invalid port in host {spec!r}: {port}")
        hostvars["ansible_port"] = port
    # ':' in a host name reads as a port in YAML inventories and as a separator in Ansible's host patterns: an
    # IPv6 address is named by its groups (ipv6-0-0-0-0-0-0-0-1), and a port is appended as _PORT.
    name = host
    if ":" in host:
        try:
            groups = ipaddress.IPv6Address(host).exploded.split(":")
        except ValueError:
            raise ConfigError(f"invalid host {spec!r}: {host!r} is not an IPv6 address") from None
        name = "ipv6-" + "-".join(f"{int(g, 16):x}" for g in groups)
    if "ansible_port" in hostvars:
        name = f"{name}_{hostvars['ansible_port']}"
    return Target(name, hostvars)


def _resolvable(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def resolve_targets(
    specs: Sequence[str],
    *,
    inventory_path: Path | None = None,
    selection: Selection | None = None,
    limit: str | None = None,
    vault: VaultOptions | None = None,
    connection: Connection | None = None,
) -> TargetSet:
    """Resolve HOST arguments.

    ``selection`` is Ansible's answer for ``inventory_path`` (:func:`dlsetup.run.inventory.select`): per HOST
    argument, as one host pattern, the inventory hosts it selects within ``limit``. An argument that selects none
    is ``localhost`` or an ad-hoc ``[user@]address[:port]`` (a comma-separated list of them). ``limit`` keeps, of
    those, the ones it names. This module does no I/O beyond name resolution.
    """
    if not specs:
        raise ConfigError("no host given: name at least one HOST (e.g. localhost)")
    if limit is not None and not limit.strip():
        raise ConfigError("--limit is empty: give a host pattern, e.g. --limit 'rigs:!rig-2'")
    targets: dict[str, Target] = {}
    for index, raw in enumerate(specs):
        rest = [s.strip() for s in raw.split(",")]
        if selection is not None and (selection.matched[index] or selection.matched_all[index]):
            # within the inventory: --limit may leave none of it, as ansible-playbook's does
            for name in selection.matched[index]:
                targets.setdefault(name, Target(name, {}, from_inventory=True))
            # the names of the list the inventory does not know: localhost, addresses, or a typo to report
            rest = list(selection.unmatched_parts[index]) if index < len(selection.unmatched_parts) else []
        for spec in rest:
            if not spec:
                continue
            if selection is not None and spec in selection.empty_groups:
                raise ConfigError(f"group {spec!r} in {inventory_path} has no hosts")
            for target in _resolve_one(spec, inventory_path):
                if limit is None or _limit_keeps(target.name, limit):
                    targets.setdefault(target.name, target)
    if not targets:
        within = f" within --limit {limit!r}" if limit is not None else ""
        raise ConfigError(f"no hosts matched {', '.join(specs)!r}{within}")
    return TargetSet(
        tuple(targets.values()),
        inventory_path,
        dict(selection.hostvars) if selection is not None else {},
        vault=vault or VaultOptions(),
        vaulted=selection.vaulted if selection is not None else (),
        inventory_plugins=selection.plugins if selection is not None else (),
        connection=connection or Connection(),
    )


def _limit_keeps(name: str, limit: str) -> bool:
    """Whether ``--limit`` selects a host that is not in the inventory (localhost, an address), read as Ansible
    reads a pattern: its parts (``,`` or ``:``) are names, ``all``/``*``, wildcards or ``~regex``; ``!part``
    excludes, ``&part`` must also match."""

    def matches(part: str) -> bool:
        if part in ("all", "*"):
            return True
        if part.startswith("~"):
            return re.search(part[1:], name) is not None
        return fnmatch.fnmatchcase(name, part)

    parts = [p.strip() for p in re.split(r"[,:]", limit) if p.strip()]
    wanted = [p for p in parts if not p.startswith(("!", "&"))]
    return (
        (not wanted or any(matches(p) for p in wanted))
        and all(matches(p[1:]) for p in parts if p.startswith("&"))
        and not any(matches(p[1:]) for p in parts if p.startswith("!"))
    )


def _resolve_one(spec: str, inventory_path: Path | None) -> list[Target]:
    if spec in LOCAL_NAMES:
        return [local_target()]
    if inventory_path is not None and not _ADHOC.match(spec):
        raise ConfigError(f"host pattern {spec!r} matches no host in inventory {inventory_path}")
    target = parse_adhoc(spec)
    host = str(target.hostvars["ansible_host"])
    looks_like_address = "@" in spec or ":" in spec or "." in host or _is_ip(host)
    if inventory_path is not None and not looks_like_address:
        raise ConfigError(f"unknown host or group {spec!r}: not in inventory {inventory_path}")
    if not _resolvable(host):
        raise ConfigError(f"unknown host {spec!r}: the name {host!r} does not resolve")
    return [target]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
