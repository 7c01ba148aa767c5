"""Turn HOST arguments and an optional inventory into the hosts one run works on.

A HOST argument is one of:
  * ``localhost``: this machine, local connection, no inventory needed;
  * ``[user@]address[:port]``: an ad-hoc SSH host (host keys are checked against known_hosts);
  * a host or group name from ``-i INVENTORY``.
Everything is resolved and validated before any host is touched.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsetup.errors import ConfigError

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
class TargetSet:
    """The resolved hosts plus the inventory sources the runner needs."""

    targets: tuple[Target, ...]
    inventory_path: Path | None
    # variables of every inventory host (after ansible-inventory's merge), by host name
    inventory_hostvars: Mapping[str, Mapping[str, Any]]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def adhoc_inventory(self) -> dict[str, Any]:
        """A YAML-shaped inventory for the hosts that do not come from the user's inventory."""
        hosts = {t.name: dict(t.hostvars) for t in self.targets if not t.from_inventory}
        return {"all": {"hosts": hosts}} if hosts else {}

    def inventory_for_all(self) -> dict[str, Any]:
        """One inventory naming exactly these hosts with their merged variables (for testinfra)."""
        return {"all": {"hosts": {t.name: dict(self.hostvars(t.name)) for t in self.targets}}}

    def subset(self, names: Sequence[str]) -> TargetSet:
        """The same inventory, limited to ``names`` (in this set's order)."""
        kept = tuple(t for t in self.targets if t.name in names)
        return TargetSet(kept, self.inventory_path, self.inventory_hostvars)

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
    inventory: Mapping[str, Any] | None = None,
) -> TargetSet:
    """Resolve HOST arguments.

    ``inventory`` is the JSON of ``ansible-inventory --list`` for ``inventory_path`` (the runner produces it);
    it is passed in so this module stays free of I/O beyond name resolution.
    """
    if not specs:
        raise ConfigError("no host given: name at least one HOST (e.g. localhost)")
    groups: dict[str, list[str]] = {}
    hostvars: dict[str, dict[str, Any]] = {}
    if inventory is not None:
        groups = _group_members(inventory)
        # a host without variables of its own is only in its groups' lists, not under _meta.hostvars
        hostvars = {name: {} for name in groups.get("all", [])}
        hostvars.update({k: dict(v) for k, v in inventory.get("_meta", {}).get("hostvars", {}).items()})
    targets: dict[str, Target] = {}
    for raw in specs:
        for spec in (s.strip() for s in raw.split(",")):
            if not spec:
                continue
            for target in _resolve_one(spec, inventory_path, groups, hostvars):
                targets.setdefault(target.name, target)
    if not targets:
        raise ConfigError(f"no hosts matched {', '.join(specs)!r}")
    return TargetSet(tuple(targets.values()), inventory_path, hostvars)


def _resolve_one(
    spec: str,
    inventory_path: Path | None,
    groups: Mapping[str, list[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
) -> list[Target]:
    if spec in hostvars:
        return [Target(spec, {}, from_inventory=True)]
    if spec in groups:
        members = groups[spec]
        if not members:
            raise ConfigError(f"group {spec!r} in {inventory_path} has no hosts")
        return [Target(name, {}, from_inventory=True) for name in members]
    if spec in LOCAL_NAMES:
        return [local_target()]
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


def _group_members(inventory: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every group's hosts, children included, in inventory order."""

    def members(group: str, seen: set[str]) -> list[str]:
        if group in seen:
            return []
        seen.add(group)
        entry = inventory.get(group, {})
        hosts = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts.extend(h for h in members(child, seen) if h not in hosts)
        return hosts

    # a group without hosts is only named in its parent's children
    names = [g for g in inventory if g != "_meta"]
    for entry in list(inventory.values()):
        if isinstance(entry, Mapping):
            names += [c for c in entry.get("children", []) if c not in names]
    return {g: members(g, set()) for g in names}
