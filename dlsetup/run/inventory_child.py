"""The inventory, read by Ansible itself: run as ``python -m dlsetup.run.inventory_child`` by
:mod:`dlsetup.run.inventory`, a request (JSON) on stdin, the answer (JSON) on stdout.

A child process, not an import: Ansible's configuration, display and vault context are process globals, read from
the environment dlsetup gives its Ansible children (:func:`dlsetup.paths.ansible_env`). The answer holds only the
hosts the patterns select, so what the parent reads and keeps grows with the selection, not with the inventory.
Vaulted values are decrypted here, in memory, with the password the request carries or the file it names: the
answer travels over a pipe and is never written to a file.

Request: ``{"sources": [path], "patterns": [str], "limit": str | null, "vault_password": str | null,
"vault_password_files": [path]}``. Answer: ``{"matched": [[host, ...] per pattern, within the limit],
"matched_all": [the same without it], "hostvars": {host: vars}, "empty_groups": [group], "vaulted": [value],
"plugins": [name], "unmatched_parts": [[name, ...] per pattern]}`` or ``{"error": str, "about": "inventory" |
"pattern" | "vault"}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ansible import constants
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import AnsibleVaultError, VaultSecret, VaultSecretsContext, get_file_vault_secret
from ansible.plugins.loader import init_plugin_loader
from ansible.utils.display import Display
from ansible.vars.manager import VariableManager

# what VariableManager adds to every host's variables that is not the inventory's (Ansible's magic variables)
MAGIC = frozenset(
    {
        "ansible_check_mode",
        "ansible_config_file",
        "ansible_diff_mode",
        "ansible_facts",
        "ansible_forks",
        "ansible_inventory_sources",
        "ansible_limit",
        "ansible_playbook_python",
        "ansible_run_tags",
        "ansible_skip_tags",
        "ansible_verbosity",
        "ansible_version",
        "group_names",
        "groups",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "playbook_dir",
    }
)


# the inventory plugins tried in turn on a source: Ansible's default order, and dlsetup's, which tries the yaml
# plugin before auto (auto loads a YAML file only to hand it to the yaml plugin, which loads it again: twice the
# time on a large inventory; a plugin configuration still reaches auto, which yaml declines)
DEFAULT_PLUGINS = ("host_list", "script", "auto", "yaml", "ini", "toml")
FAST_PLUGINS = ("host_list", "script", "yaml", "ini", "auto", "toml")


class _VaultedError(Exception):
    """A vaulted value, and no vault secret to open it with."""


def _plain(value: Any, vaulted: list[str]) -> Any:
    """A JSON value; a vaulted one decrypted (Ansible's EncryptedString is no str) and added to ``vaulted``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, vaulted) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, vaulted) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if type(value).__name__ == "EncryptedString":
        try:
            vaulted.append(str(value))
        except ReferenceError:
            raise _VaultedError from None
        return vaulted[-1]
    return str(value)


def _plugin_order() -> list[str]:
    """The order of inventory plugins for this process and dlsetup's Ansible runs: the user's, where their
    configuration sets one; else :data:`FAST_PLUGINS`."""

    value, origin = constants.config.get_config_value_and_origin("INVENTORY_ENABLED")
    if origin == "default" and tuple(value) == DEFAULT_PLUGINS:
        constants.INVENTORY_ENABLED = list(FAST_PLUGINS)
        return list(FAST_PLUGINS)
    return list(value)


def _secrets(loader: Any, request: Mapping[str, Any]) -> list[Any]:
    """The vault secrets: the asked password, the password files given, and those Ansible's own configuration
    names (``ANSIBLE_VAULT_PASSWORD_FILE``, ``vault_identity_list`` entries that are files), as ansible-playbook
    reads them too."""
    secrets: list[Any] = []
    if request.get("vault_password") is not None:
        secrets.append(("default", VaultSecret(str(request["vault_password"]).encode())))
    files = [("default", name) for name in request.get("vault_password_files") or []]
    if constants.DEFAULT_VAULT_PASSWORD_FILE:
        files.append(("default", str(constants.DEFAULT_VAULT_PASSWORD_FILE)))
    for identity in constants.DEFAULT_VAULT_IDENTITY_LIST or []:
        vault_id, _, source = str(identity).rpartition("@")
        if source and source != "prompt":
            files.append((vault_id or "default", source))
    for vault_id, name in files:
        secret = get_file_vault_secret(filename=name, vault_id=vault_id, loader=loader)
        secret.load()
        secrets.append((vault_id, secret))
    return secrets


class _RecordingLoader(DataLoader):  # type: ignore[misc]
    """Ansible's loader, keeping what it decrypted of wholly vault-encrypted files (``ansible-vault encrypt
    group_vars/rigs.yml``): every value in them is a secret, whatever its name."""

    def __init__(self) -> None:
        super().__init__()
        self.decrypted: list[bytes] = []

    def _decrypt_if_vault_data(self, b_data: bytes) -> tuple[bytes, bool]:
        data, plaintext = super()._decrypt_if_vault_data(b_data)
        if not plaintext:
            self.decrypted.append(data)
        return data, plaintext

    def secret_values(self) -> list[str]:
        found: list[str] = []

        def leaves(value: Any) -> None:
            if isinstance(value, Mapping):
                for item in value.values():
                    leaves(item)
            elif isinstance(value, list):
                for item in value:
                    leaves(item)
            elif value is not None and not isinstance(value, bool):
                found.append(str(value))

        for data in self.decrypted:
            try:
                leaves(yaml.safe_load(data))
            except yaml.YAMLError:
                found.append(data.decode(errors="replace"))
        return found


def _reason(source: str, failures: list[tuple[str, BaseException | None]]) -> str:
    """Why no plugin could read ``source``: the failure of the plugin meant for it (by its name or its kind)."""
    path = Path(source)
    wanted = "'yaml'" if path.suffix in (".yml", ".yaml", ".json") else "'ini'"
    if path.is_file() and path.stat().st_mode & 0o111:
        wanted = "'script'"
    if not failures and path.is_dir():
        return "the directory holds no inventory file Ansible can read"
    if any("Plugin configuration YAML file" in str(exc) for _msg, exc in failures):
        wanted = "'auto'"  # a plugin's configuration (``plugin: constructed``): auto is the one meant for it
    # the failure that knows where (a YAML error's line and column), then the one of the plugin meant for it
    ranked = sorted(failures, key=lambda f: (getattr(_origin(f[1]), "line_num", None) is None, wanted not in f[0]))
    for _plugin, exc in ranked:
        if exc is not None:
            text = " ".join(str(exc).split()).removeprefix("Failed to parse inventory: ").strip()
            return text + (_line(exc, [source]) or "") if text else type(exc).__name__
    return "no inventory plugin could read it"


def _origin(exc: BaseException | None) -> Any:
    """The place (file, line, column) an Ansible error or the one it was raised from points at."""
    while exc is not None:
        origin = getattr(exc, "obj", None)
        if getattr(origin, "path", None):
            return origin
        exc = exc.__cause__ or exc.__context__
    return None


def _line(exc: BaseException | None, sources: Sequence[str] = ()) -> str | None:
    """`` (line L, column C)`` of the place an Ansible error points at, if it knows one; with the file's path
    when it is not an inventory source itself (a ``group_vars/`` file)."""
    origin = _origin(exc)
    line = getattr(origin, "line_num", None)
    path = str(getattr(origin, "path", None) or "")
    where = f"{path} " if path and path not in sources else ""
    if not line:
        return f" ({path})" if where else None
    column = getattr(origin, "col_num", None)
    return f" ({where}line {line}, column {column})" if column else f" ({where}line {line})"


def answer(request: Mapping[str, Any]) -> dict[str, Any]:

    init_plugin_loader()  # as Ansible's CLIs do: plugins named by FQCN (ansible.builtin.constructed) load
    failures: list[tuple[str, BaseException | None]] = []
    display = Display()

    def capture(msg: str, exception: BaseException | None = None, **_: Any) -> None:
        failures.append((msg, exception))

    display.error_as_warning = capture
    loader = _RecordingLoader()
    try:
        secrets = _secrets(loader, request)
    except AnsibleError as exc:
        return {"error": f"the vault password: {' '.join(str(exc).split())}", "about": "vault"}
    if secrets:
        loader.set_vault_secrets(secrets)
        VaultSecretsContext.initialize(VaultSecretsContext(secrets))
    sources = list(request["sources"])
    plugins = _plugin_order()
    try:
        inventory = InventoryManager(loader=loader, sources=sources)
    except AnsibleError as exc:
        vault = next((e for e in [exc, *(f for _, f in failures)] if _vault_failure(e)), None)
        if vault is not None:  # a wholly encrypted file, and no (or a wrong) password
            return _vault_error(vault)
        failed = next((s for s in sources if str(s) in str(exc)), sources[0])
        return {"error": _reason(failed, failures) if failures or Path(failed).is_dir() else " ".join(str(exc).split())}
    known = inventory.hosts

    def match(patterns: list[str]) -> list[list[str]]:
        # an implicit localhost (not in the inventory) is not a match: dlsetup has its own
        return [[h.name for h in inventory.get_hosts(p) if h.name in known] for p in patterns]

    def unmatched(pattern: str) -> list[str]:
        """The plain names of a comma list that select nothing here (localhost, an address: dlsetup's)."""
        parts = [p.strip() for p in pattern.split(",")]
        if len(parts) < 2:
            return []
        return [p for p in parts if p and not p.startswith(("!", "&")) and not match([p])[0]]

    try:
        matched_all = match(request["patterns"])
        unmatched_parts = [unmatched(p) for p in request["patterns"]]
        if request.get("limit"):
            inventory.subset(request["limit"])
        matched = match(request["patterns"]) if request.get("limit") else matched_all
    except AnsibleError as exc:
        return {"error": " ".join(str(exc).split()), "about": "pattern"}
    variables = VariableManager(loader=loader, inventory=inventory)
    selected = dict.fromkeys(name for names in matched for name in names)
    hostvars: dict[str, Any] = {}
    vaulted: list[str] = []
    for name in selected:
        try:
            raw = variables.get_vars(host=known[name], include_hostvars=False)
            hostvars[name] = {k: _plain(v, vaulted) for k, v in raw.items() if k not in MAGIC}
        except _VaultedError:
            return {
                "error": f"host {name} has vaulted variables and no vault password was given: use --ask-vault-pass "
                "or --vault-password-file",
                "about": "vault",
            }
        except AnsibleError as exc:
            if _vault_failure(exc):  # a wrong vault password, or none for an encrypted file
                return _vault_error(exc, f"host {name}: ")
            # a group_vars/ or host_vars/ file that does not parse
            return {"error": " ".join(str(exc).split()) + (_line(exc, sources) or "")}
    groups = inventory.groups
    return {
        "matched": matched,
        "matched_all": matched_all,
        "hostvars": hostvars,
        "empty_groups": sorted(g for g, group in groups.items() if not group.get_hosts()),
        "vaulted": sorted(set(vaulted) | set(loader.secret_values())),
        "plugins": plugins,
        "unmatched_parts": unmatched_parts,
    }


def _vault_failure(exc: BaseException | None) -> bool:
    return isinstance(exc, AnsibleVaultError) or "vault" in str(exc or "").lower()


def _vault_error(exc: BaseException, prefix: str = "") -> dict[str, str]:
    text = " ".join(str(exc).split())
    hint = "" if "Decryption failed" in text else ": use --ask-vault-pass or --vault-password-file"
    return {"error": f"{prefix}{text}{hint}", "about": "vault"}


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        reply = answer(request)
    except Exception as exc:
        reply = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
