"""The reliability suite's table (issue 10): bad or hostile inputs and faults, each with the exit code and the cause
dlsetup must answer with, run by test_reliability.py against one real Debian 12 host and rendered into
docs/reliability.md by render.py.

A :class:`Case` is data: the arguments of ``dlsetup`` (``{inv}``, ``{host}``, ``{addr}``, ``{tmp}``, ``{state}`` and
whatever its ``setup`` adds to :attr:`Context.values` are filled in), a ``setup`` that makes the bad input in the
case's own directory (an inventory, a file, an environment variable, a mount), the expected exit code and a regular
expression the first two lines of stderr must match (``None``: the command must succeed). How a case is driven
beyond one plain run is data too: ``interrupt`` (a signal once a phase has started), ``parallel`` (several runs at
once), ``check`` (one more assertion on the result). This module needs no host: the unit layer renders the table
from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

# the code words of docs/reliability.md's "area" column, in the order the table lists them
AREAS = (
    "inventory",
    "host",
    "host key",
    "expectation",
    "pin",
    "option",
    "path",
    "environment",
    "signal",
    "concurrency",
    "disk",
    "scale",
)
KEEP_RUNS = 30  # dlsetup.run.rundir.KEEP_RUNS: rotation keeps this many run directories
OLD_RUNS = 34  # run directories already in the state directory of the concurrency case
BIG_INVENTORY_HOSTS = 100_000
BIG_INVENTORY_MIN_BYTES = 10 * 1024 * 1024
BIG_STATE_MAX_BYTES = 5 * 1024 * 1024  # what a facts run over the 10 MB inventory may leave in the state dir
SECRET = "rel-S3cret-0f5e9a"  # a password the run artifacts must never hold
# what the cases measured in this run (printed at the end of the pytest output)
MEASURED: list[str] = []
FAKE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJk7yCtnTuf7Iv2BeR3sJbhx1tVnQyqbF2cbKcH8KpG"  # not the host's key


@dataclass
class Context:
    """What a case's setup and check work with: its own directory, the environment and state directory of its
    run, and the variables that reach the suite's host (``host_vars``: connection and GPU fakes)."""

    tmp: Path
    state: Path
    env: dict[str, str]
    host_name: str
    address: str
    host_vars: dict[str, Any]
    ssh_common_args: Callable[[Path], str]
    values: dict[str, str] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def write(self, name: str, content: str | bytes, mode: int = 0o644) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(mode)
        return path

    def inventory(
        self,
        extra: Mapping[str, Any] | None = None,
        *,
        name: str = "bad.yml",
        known_hosts: Path | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> Path:
        """A YAML inventory of the host with its working variables, ``extra`` over them; the path is ``{bad}``."""
        host_vars = {**self.host_vars, **(extra or {})}
        if known_hosts is not None:
            host_vars["ansible_ssh_common_args"] = self.ssh_common_args(known_hosts)
        inventory: dict[str, Any] = {"all": {"hosts": {self.host_name: host_vars}}}
        if groups is not None:
            inventory["all"]["children"] = {g: {"hosts": dict.fromkeys(hosts)} for g, hosts in groups.items()}
        path = self.write(name, yaml.safe_dump(inventory, sort_keys=False))
        self.values["bad"] = str(path)
        return path

    def mount_tmpfs(self, name: str, options: str) -> Path:
        """A tmpfs mounted at ``{tmp}/name``, unmounted when the case ends (after its checks)."""
        path = self.tmp / name
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        self.cleanups.append(lambda: subprocess.run(["umount", str(path)], check=True))
        return path


@dataclass(frozen=True)
class Interrupt:
    """Send ``signum`` once a run of ``phase`` (the kind in its run directory's name) has started and a
    ``child`` process (ansible-playbook, the verify suite's pytest) of it is running."""

    signum: int
    phase: str
    child: str
    # Ctrl-C signals the terminal's foreground process group; SIGTERM (kill, systemd) the process alone
    group: bool = False


@dataclass(frozen=True)
class Outcome:
    """One run of dlsetup: its exit code, output and wall time."""

    code: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    what: str  # the bad input or the fault, for the doc
    argv: tuple[str, ...]
    expect_code: int
    cause: str | None  # regex over the first two stderr lines; None: a success, stderr is not read
    setup: Callable[[Context], None] | None = None
    stdin: str | None = None
    interrupt: Interrupt | None = None
    parallel: int = 1
    check: Callable[[Context, Sequence[Outcome]], None] | None = None
    timeout_s: float = 300
    # the product bug this case shows while it is not fixed: the case runs as xfail(strict=True)
    xfail: str | None = None
    # the product bug this case showed (it failed) before the fix that it now guards
    fixed: str | None = None


# -- setups ------------------------------------------------------------------------------------------------------


def _write(name: str, content: str | bytes, mode: int = 0o644, key: str = "bad") -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.values[key] = str(ctx.write(name, content, mode))

    return setup


def _inventory(extra: Mapping[str, Any] | None = None, **kwargs: Any) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.inventory(extra, **kwargs)

    return setup


def _symlink_loop(ctx: Context) -> None:
    (ctx.tmp / "loop-a").symlink_to(ctx.tmp / "loop-b")
    (ctx.tmp / "loop-b").symlink_to(ctx.tmp / "loop-a")
    ctx.values["bad"] = str(ctx.tmp / "loop-a")


def _broken_symlink(ctx: Context) -> None:
    (ctx.tmp / "gone.yml").symlink_to(ctx.tmp / "was-here.yml")
    ctx.values["bad"] = str(ctx.tmp / "gone.yml")


def _fifo(ctx: Context) -> None:
    os.mkfifo(ctx.tmp / "inventory.fifo")
    ctx.values["bad"] = str(ctx.tmp / "inventory.fifo")


def _empty_dir(ctx: Context) -> None:
    (ctx.tmp / "inventory.d").mkdir()
    ctx.values["bad"] = str(ctx.tmp / "inventory.d")


def _dir_with_bad_group_vars(ctx: Context) -> None:
    ctx.write("inventory.d/hosts.yml", yaml.safe_dump({"all": {"hosts": {ctx.host_name: ctx.host_vars}}}))
    ctx.write("inventory.d/group_vars/all.yml", "dlsetup_expect: [\n")
    ctx.values["bad"] = str(ctx.tmp / "inventory.d")


def _group_vars_only(ctx: Context) -> None:
    """The host's variables on its group, the host itself a bare name (``rel12:`` with nothing under it)."""
    inventory = {"all": {"children": {"rigs": {"vars": ctx.host_vars, "hosts": {ctx.host_name: None}}}}}
    ctx.values["bad"] = str(ctx.write("bare.yml", yaml.safe_dump(inventory, sort_keys=False)))


VAULT_PASSWORD = "rel-vault-pw-51c2"


def _vaulted(wrong_password: bool = False) -> Callable[[Context], None]:
    """The host's become password and a note vaulted with the real ``ansible-vault`` (the note under a name no
    rule calls secret); ``{vpass}`` is the password file, with the right password or a wrong one."""

    def setup(ctx: Context) -> None:
        right = ctx.write("vault-pass", VAULT_PASSWORD + "\n", 0o600)
        vault = str(Path(sys.executable).parent / "ansible-vault")

        def encrypted(value: str) -> Any:
            text = subprocess.run([vault, "encrypt_string", "--vault-password-file", str(right), value],
                                  capture_output=True, text=True, check=True).stdout  # fmt: skip
            return _VaultText(text.split("!vault |", 1)[1].strip("\n"))

        ctx.inventory({"ansible_become_password": encrypted(SECRET), "lab_note": encrypted(SECRET + "-note")})
        ctx.values["vpass"] = str(ctx.write("wrong-pass", "not-it\n", 0o600) if wrong_password else right)

    return setup


class _VaultText(str):
    """A vaulted value, dumped as YAML's ``!vault |`` block."""


def _vault_representer(dumper: yaml.SafeDumper, value: _VaultText) -> yaml.Node:
    lines = "\n".join(line.strip() for line in value.splitlines())
    return dumper.represent_scalar("!vault", lines + "\n", style="|")


yaml.SafeDumper.add_representer(_VaultText, _vault_representer)


def _script_inventory(ctx: Context) -> None:
    """An executable inventory script (Ansible's script plugin) that prints the host and its variables."""
    listing = {"rigs": {"hosts": [ctx.host_name]}, "_meta": {"hostvars": {ctx.host_name: ctx.host_vars}}}
    body = f"#!{sys.executable}\nimport json\nprint(json.dumps({listing!r}))\n"
    ctx.values["bad"] = str(ctx.write("inventory.py", body, 0o755))


def _constructed_inventory(ctx: Context) -> None:
    """A directory: the host in a YAML file, and a plugin configuration (``ansible.builtin.constructed``) that
    makes the group ``two_gpu_rigs`` the case then names."""
    ctx.write("inventory.d/10-hosts.yml", yaml.safe_dump({"all": {"hosts": {ctx.host_name: ctx.host_vars}}}))
    ctx.write("inventory.d/20-constructed.yml", "plugin: ansible.builtin.constructed\nstrict: true\ngroups:\n"
              "  two_gpu_rigs: \"inventory_hostname.startswith('rel')\"\n")  # fmt: skip
    ctx.values["bad"] = str(ctx.tmp / "inventory.d")


def _ini_inventory(ctx: Context) -> None:
    line = " ".join(f"{k}={v!r}" if " " in str(v) else f"{k}={v}" for k, v in ctx.host_vars.items())
    ctx.values["bad"] = str(ctx.write("hosts.ini", f"[rigs]\n{ctx.host_name} {line}\n"))


def _locale(name: str) -> Callable[[Context], None]:
    """The inventory under a non-ASCII name, the locale ``name``."""

    def setup(ctx: Context) -> None:
        ctx.inventory(name="inventür-ü.yml")
        for key in ("LC_ALL", "LANG", "LC_CTYPE"):
            ctx.env[key] = name

    return setup


def _known_hosts(content: str, *, env: Mapping[str, str] | None = None) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        known = ctx.write("known_hosts", content.format(addr=ctx.address))
        ctx.inventory(known_hosts=known)
        ctx.env.update(env or {})

    return setup


def _missing_known_hosts(ctx: Context) -> None:
    ctx.inventory(known_hosts=ctx.tmp / "no-such-known_hosts")


def _env(**values: str) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.env.update({k: v.format(tmp=ctx.tmp) for k, v in values.items()})

    return setup


def _drop_env(*names: str) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        for name in names:
            ctx.env.pop(name, None)

    return setup


def _bad_ansible_config(ctx: Context) -> None:
    ctx.env["ANSIBLE_CONFIG"] = str(ctx.write("ansible.cfg", "[defaults\nthis is not ini = [\n"))


def _state_dir(make: Callable[[Context], Path]) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.env["DLSETUP_STATE_DIR"] = str(make(ctx))

    return setup


def _state_is_file(ctx: Context) -> Path:
    return ctx.write("state-file", "not a directory\n")


def _state_runs_is_file(ctx: Context) -> Path:
    ctx.write("state-runs/runs", "not a directory\n")
    return ctx.tmp / "state-runs"


def _state_read_only(ctx: Context) -> Path:
    return ctx.mount_tmpfs("state-ro", "ro,size=64k")


def _state_full(ctx: Context) -> Path:
    full = ctx.mount_tmpfs("state-full", "size=64k")
    with (full / "filler").open("wb", buffering=0) as filler:  # unbuffered: nothing left to flush on close
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: the disk is full
    return full


def _state_no_inodes(ctx: Context) -> Path:
    full = ctx.mount_tmpfs("state-inodes", "size=1m,nr_inodes=8")
    for number in range(64):
        try:
            (full / f"f{number}").touch()
        except OSError:
            break  # ENOSPC: no inode left
    return full


def _old_runs(ctx: Context) -> None:
    """A shared state directory already holding :data:`OLD_RUNS` finished run directories (as a dlsetup of this
    version leaves them: numbered, unlocked)."""
    runs = ctx.state / "runs"
    runs.mkdir(parents=True, mode=0o700)
    for number in range(1, OLD_RUNS + 1):
        run = runs / f"20240101-{number:06d}-facts-old{number:02d}"
        run.mkdir(mode=0o700)
        (run / ".lock").write_text(f"{number} 1\n")
    (runs / ".sequence").write_text(f"{OLD_RUNS}\n")


def _big_inventory(ctx: Context) -> None:
    """About 10 MB of YAML: :data:`BIG_INVENTORY_HOSTS` hosts in 100 racks, the suite's host among them."""
    path = ctx.tmp / "big.yml"
    host_vars = yaml.safe_dump({ctx.host_name: ctx.host_vars}, default_flow_style=True, width=10_000).strip()
    with path.open("w") as out:
        out.write("all:\n  children:\n")
        for rack in range(100):
            out.write(f"    rack{rack:03d}:\n      vars: {{rack_row: row-{rack // 10}}}\n      hosts:\n")
            if rack == 42:
                out.write(f"        {host_vars[1:-1]}\n")
            for number in range(BIG_INVENTORY_HOSTS // 100):
                index = rack * 1000 + number
                out.write(
                    f"        node-{index:06d}: {{ansible_host: 198.18.{index // 250 % 256}.{index % 250 + 1}, "
                    f"asset_tag: SN-{index:08d}-ABCDEFGHIJKL, note: spare node awaiting its cards in rack {rack}}}\n"
                )
    assert path.stat().st_size >= BIG_INVENTORY_MIN_BYTES, path.stat().st_size
    ctx.values["bad"] = str(path)


# -- checks ------------------------------------------------------------------------------------------------------


def _run_dirs(ctx: Context) -> list[Path]:
    runs = ctx.state / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _nothing_ran(ctx: Context, outcomes: Sequence[Outcome]) -> None:
    assert not _run_dirs(ctx), f"a run started: {_run_dirs(ctx)}"


def _no_secret(ctx: Context, outcomes: Sequence[Outcome]) -> None:
    leaks = [p for p in ctx.state.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the secret is in {leaks}"
    assert all(SECRET not in o.stdout + o.stderr for o in outcomes)


def _rotated(ctx: Context, outcomes: Sequence[Outcome]) -> None:
    runs = _run_dirs(ctx)
    assert len(runs) <= KEEP_RUNS, f"{len(runs)} run directories kept, more than {KEEP_RUNS}"
    # both runs kept their facts and verify directories whole (rotation never took a live one)
    for kind in ("facts", "verify"):
        mine = [p for p in runs if f"-{kind}-" in p.name and "-old" not in p.name]
        assert len(mine) == 2, (kind, [p.name for p in runs])
    assert not (ctx.state / "runs" / "20240101-000001-facts-old01").exists(), "the oldest run was not rotated"


def _small_leftovers(ctx: Context, outcomes: Sequence[Outcome]) -> None:
    size = sum(p.stat().st_size for p in ctx.state.rglob("*") if p.is_file())
    MEASURED.append(f"inventory-10mb: {outcomes[0].seconds:.0f} s, {size} bytes left in the state directory")
    assert size <= BIG_STATE_MAX_BYTES, f"the state directory holds {size} bytes after a facts run"


# -- the table ---------------------------------------------------------------------------------------------------

FACTS = ("facts", "-i", "{bad}", "{host}")
PLAN = ("plan", "-i", "{bad}", "{host}")
VERIFY = ("verify", "-i", "{inv}", "{host}")
PLAN_GOOD = ("plan", "-i", "{inv}", "{host}")
OFFLINE = ("plan", "--os", "debian-12", "--gpu", "10de:1b06")
USAGE_ERROR = (
    "Typer's usage error: 'Usage:' and 'Try ... -h' came first, the cause on line 4 inside a box drawn with box "
    "characters"
)

CHANGED_KEY = (
    "the cause was the first line of ssh's stderr, the '@@@@...' banner of 'WARNING: REMOTE HOST IDENTIFICATION HAS "
    "CHANGED!', so it never said the host key changed"
)

# fmt: off
CASES: tuple[Case, ...] = (
    # -- inventories ----------------------------------------------------------------------------------------------
    Case("inventory-missing", "inventory", "`-i` names a file that does not exist", ("facts", "-i", "{tmp}/nope.yml",
         "{host}"), 2, r"inventory \S+nope\.yml does not exist"),
    Case("inventory-empty-file", "inventory", "an empty inventory file", FACTS, 2,
         r"unknown host or group 'rel12': not in inventory \S+empty\.yml", _write("empty.yml", "")),
    Case("inventory-yaml-syntax", "inventory", "YAML that does not parse (`all: [`): its line and column", FACTS, 2,
         r"invalid inventory \S+broken\.yml: YAML parsing failed: .* \(line 2, column 1\)$",
         _write("broken.yml", "all: [\n"), fixed="the cause was the YAML error without its line and column"),
    Case("inventory-binary", "inventory", "4 KiB of random bytes as the inventory", FACTS, 2,
         r"invalid inventory \S+random\.yml", _write("random.yml", os.urandom(4096))),
    Case("inventory-ini-syntax", "inventory", "an INI inventory with an unclosed `[group`", FACTS, 2,
         r"invalid inventory \S+hosts\.ini", _write("hosts.ini", "[rigs\nrel12 ansible_host=192.0.2.1\n")),
    Case("inventory-empty-dir", "inventory", "an empty directory as the inventory", FACTS, 2,
         r"invalid inventory \S+inventory\.d", _empty_dir),
    Case("inventory-bad-group-vars", "inventory", "an inventory directory whose `group_vars/all.yml` does not parse",
         FACTS, 2, r"invalid inventory \S+inventory\.d: YAML parsing failed: .* \(\S+group_vars/all\.yml line 2, "
         r"column 1\)$", _dir_with_bad_group_vars),
    Case("inventory-recursive-groups", "inventory", "groups that are each other's children", FACTS, 2,
         r"invalid inventory \S+loop\.yml",
         _write("loop.yml", "all:\n  children:\n    a:\n      children:\n        b:\n          hosts: {rel12: {}}\n"
                "          children:\n            a: {}\n")),
    Case("inventory-symlink-loop", "inventory", "`-i` on a loop of symbolic links", FACTS, 2,
         r"inventory \S+loop-a is a loop of symbolic links", _symlink_loop),
    Case("inventory-broken-symlink", "inventory", "`-i` on a symbolic link to nothing", FACTS, 2,
         r"inventory \S+gone\.yml is a broken symbolic link", _broken_symlink),
    Case("inventory-fifo", "inventory", "`-i` on a FIFO nobody writes (must not hang)", FACTS, 2,
         r"inventory \S+inventory\.fifo is not a file or a directory", _fifo, timeout_s=60),
    Case("inventory-device", "inventory", "`-i /dev/zero` (an endless stream)", ("facts", "-i", "/dev/zero", "{host}"),
         2, r"inventory /dev/zero is not a file or a directory", timeout_s=60),
    Case("inventory-failing-script", "inventory", "an executable inventory script that exits 3", FACTS, 2,
         r"invalid inventory \S+inventory\.sh", _write("inventory.sh", "#!/bin/sh\necho boom >&2\nexit 3\n", 0o755)),
    Case("inventory-empty-group", "inventory", "a group without hosts named as HOST", ("facts", "-i", "{bad}", "lab"),
         2, r"group 'lab' in \S+bad\.yml has no hosts", _inventory(groups={"lab": []})),
    Case("inventory-unknown-name", "inventory", "a HOST that is neither in the inventory nor an address",
         ("facts", "-i", "{inv}", "rel13"), 2, r"unknown host or group 'rel13': not in inventory"),
    Case("inventory-role-variable", "inventory", "a role variable the plan sets (`nvidia_driver_branch`) in the "
         "inventory", PLAN, 2, r"host rel12: nvidia_driver_branch is set by dlsetup's plan",
         _inventory({"nvidia_driver_branch": "580"})),
    Case("inventory-old-variable", "inventory", "the retired `dlsetup_nvidia_repo_url`", PLAN, 2,
         r"host rel12: dlsetup_nvidia_repo_url is not read any more",
         _inventory({"dlsetup_nvidia_repo_url": "http://mirror.example/nvidia/"})),
    Case("inventory-bad-source", "inventory", "`dlsetup_pytorch_index: ftp://...`", PLAN, 2,
         r"host rel12: pytorch index 'ftp://\S+' is not an http\(s\):// or file:// address",
         _inventory({"dlsetup_pytorch_index": "ftp://mirror.example/whl"})),
    Case("inventory-pins-not-mapping", "inventory", "`dlsetup_pins: \"580\"` (a string)", PLAN, 2,
         r"host rel12: dlsetup_pins must be a mapping, got str", _inventory({"dlsetup_pins": "580"})),
    Case("inventory-expect-not-mapping", "inventory", "`dlsetup_expect: [2]` (a list)", ("verify", "-i", "{bad}",
         "{host}"), 2, r"host rel12: dlsetup_expect must be a mapping", _inventory({"dlsetup_expect": [2]})),
    Case("inventory-module-failure", "inventory", "`ansible_python_interpreter: /nonexistent/python3`: the host is "
         "reached, the facts module cannot run", PLAN, 10,
         r"host rel12: reached, but the facts module failed: .*(/nonexistent/python3|No such file)",
         _inventory({"ansible_python_interpreter": "/nonexistent/python3"})),
    Case("inventory-bare-host", "inventory", "the host without host variables (all of them on its group)",
         ("facts", "-i", "{bad}", "{host}"), 0, None, _group_vars_only),
    Case("inventory-script", "inventory", "an executable inventory script (Ansible's script plugin)",
         ("facts", "-i", "{bad}", "rigs"), 0, None, _script_inventory),
    Case("inventory-plugin", "inventory", "a directory with a plugin configuration (`ansible.builtin.constructed`) "
         "whose group is the HOST", ("facts", "-i", "{bad}", "two_gpu_rigs"), 0, None, _constructed_inventory),
    Case("inventory-vault", "inventory", "vaulted variables (become password, a note) and `--vault-password-file`: "
         "never decrypted to disk", ("facts", "-i", "{bad}", "{host}", "--vault-password-file", "{vpass}"), 0, None,
         _vaulted(), check=_no_secret),
    Case("inventory-vault-ask", "inventory", "vaulted variables and `--ask-vault-pass`, the password piped in",
         ("facts", "-i", "{bad}", "{host}", "--ask-vault-pass"), 0, None, _vaulted(), stdin=VAULT_PASSWORD + "\n",
         check=_no_secret),
    Case("inventory-vault-no-password", "inventory", "vaulted variables and no vault password",
         ("facts", "-i", "{bad}", "{host}"), 2, r"host rel12 has vaulted variables and no vault password was given",
         _vaulted(), fixed="vaulted values became a plain mapping that the verify step could not use"),
    Case("inventory-vault-wrong", "inventory", "vaulted variables and a wrong `--vault-password-file`",
         ("facts", "-i", "{bad}", "{host}", "--vault-password-file", "{vpass}"), 2,
         r"inventory \S+: host rel12: Decryption failed", _vaulted(wrong_password=True)),
    Case("inventory-vault-file-missing", "inventory", "`--vault-password-file` names no file",
         ("facts", "-i", "{inv}", "{host}", "--vault-password-file", "{tmp}/nope"), 2,
         r"--vault-password-file \S+nope: no such file"),
    Case("inventory-ini", "inventory", "the host in an INI inventory", ("facts", "-i", "{bad}", "{host}"), 0, None,
         _ini_inventory),
    Case("inventory-reserved-name", "inventory", "a host variable with a name Ansible reserves (`serial`: a "
         "warning, not an error)", ("facts", "-i", "{bad}", "{host}"), 0, None, _inventory({"serial": "SN-1"})),
    Case("inventory-secret", "inventory", f"`ansible_become_password: {SECRET}`: never written to the run "
         "directory", ("facts", "-i", "{bad}", "{host}"), 0, None, _inventory({"ansible_become_password": SECRET}),
         check=_no_secret),
    # -- hosts ----------------------------------------------------------------------------------------------------
    Case("host-none", "host", "no HOST at all", ("facts",), 2,
         r"^error: Missing argument 'HOST'\.\nhint: dlsetup facts -h", fixed=USAGE_ERROR),
    Case("host-bad-characters", "host", "`bad!host`", ("facts", "bad!host"), 2, r"invalid host 'bad!host'"),
    Case("host-port-zero", "host", "`root@192.0.2.1:0`", ("facts", "root@192.0.2.1:0"), 2,
         r"invalid port in host 'root@192\.0\.2\.1:0'"),
    Case("host-port-too-big", "host", "`root@192.0.2.1:99999`", ("facts", "root@192.0.2.1:99999"), 2,
         r"invalid port in host 'root@192\.0\.2\.1:99999'"),
    Case("host-unresolvable", "host", "a name that does not resolve (`no-such-host.invalid`)",
         ("facts", "no-such-host.invalid"), 2, r"unknown host 'no-such-host\.invalid': .*does not resolve"),
    Case("host-bad-ipv6", "host", "`[::g]`", ("facts", "[::g]"), 2, r"invalid host '\[::g\]'"),
    Case("host-only-commas", "host", "`,` (a list of no hosts)", ("facts", ","), 2, r"no hosts matched ','"),
    Case("host-ipv6-port", "host", "`root@[::1]:22` is one host (no sshd with a known key there)",
         ("plan", "root@[::1]:22"), 3, r"^error: host ipv6-0-0-0-0-0-0-0-1_22: unreachable"),
    Case("host-pattern", "host", "an Ansible host pattern (`all:!nothing`, `rel*`)", ("facts", "-i", "{inv}",
         "all:!nothing", "rel*"), 0, None, fixed="host patterns were 'invalid host'"),
    Case("host-limit-excludes", "host", "`--limit` that leaves none of the HOSTs", ("facts", "-i", "{inv}", "all",
         "--limit", "rel13"), 2, r"no hosts matched 'all' within --limit 'rel13'"),
    Case("host-bad-subscript", "host", "`all[5]` (a subscript past the end)", ("facts", "-i", "{inv}", "all[5]"), 2,
         r"host pattern of 'all\[5\]': No hosts matched the subscripted pattern"),
    Case("host-port-closed", "host", "the host's address on a closed port (`root@ADDR:1`)", ("plan", "root@{addr}:1"),
         3, r"host \S+_1: unreachable: .*(refused|port 1)"),
    # -- host keys ------------------------------------------------------------------------------------------------
    Case("hostkey-changed", "host key", "known_hosts holds another key for the host's address", PLAN, 3,
         r"host rel12: unreachable: the host key of \S+ has CHANGED since it was recorded \(known_hosts holds another "
         r"key at \S+known_hosts:1\)", _known_hosts(f"{{addr}} {FAKE_KEY}\n"), fixed=CHANGED_KEY),
    Case("hostkey-unknown", "host key", "an empty known_hosts: the host's key is unknown", PLAN, 3,
         r"host rel12: unreachable: .*(Host key verification failed|host key is known)", _known_hosts("")),
    Case("hostkey-no-file", "host key", "the known_hosts file the inventory names does not exist", PLAN, 3,
         r"host rel12: unreachable: .*(Host key verification failed|host key is known)", _missing_known_hosts),
    Case("hostkey-checking-off", "host key", "a changed key with `ANSIBLE_HOST_KEY_CHECKING=False` in the "
         "environment (dlsetup keeps checking)", PLAN, 3,
         r"host rel12: unreachable: the host key of \S+ has CHANGED",
         _known_hosts(f"{{addr}} {FAKE_KEY}\n", env={"ANSIBLE_HOST_KEY_CHECKING": "False"}), fixed=CHANGED_KEY),
    Case("hostkey-unknown-verify", "host key", "`verify` of a host whose key is unknown", ("verify", "-i", "{bad}",
         "{host}"), 3, r"rel12 could not be checked: unreachable: .*(Host key verification failed|host key is known)",
         _known_hosts(""), fixed="verify's one line was 'verification failed on rel12' (for a host never checked); "
         "the reason, the host key, was only in the report on stdout"),
    # -- expectations ---------------------------------------------------------------------------------------------
    Case("expect-no-value", "expectation", "`--expect gpu_count`", (*VERIFY, "--expect", "gpu_count"), 2,
         r"--expect 'gpu_count': expected KEY=VALUE"),
    Case("expect-no-key", "expectation", "`--expect =2`", (*VERIFY, "--expect", "=2"), 2,
         r"--expect '=2': expected KEY=VALUE"),
    Case("expect-unknown-key", "expectation", "`--expect gpu_cnt=2`", (*VERIFY, "--expect", "gpu_cnt=2"), 2,
         r"unknown expectation 'gpu_cnt'"),
    Case("expect-not-integer", "expectation", "`--expect gpu_count=two`", (*VERIFY, "--expect", "gpu_count=two"), 2,
         r"gpu_count must be an integer, got 'two'"),
    Case("expect-negative", "expectation", "`--expect gpu_count=-1`", (*VERIFY, "--expect", "gpu_count=-1"), 2,
         r"gpu_count must be >= 0, got -1"),
    Case("expect-not-boolean", "expectation", "`--expect root_disk_ssd=maybe`",
         (*VERIFY, "--expect", "root_disk_ssd=maybe"), 2, r"root_disk_ssd must be true or false, got 'maybe'"),
    Case("expect-framework", "expectation", "`--expect framework=tensorflow`",
         (*VERIFY, "--expect", "framework=tensorflow"), 2, r"framework must be one of .*, got 'tensorflow'"),
    Case("expect-ratio", "expectation", "`--expect pcie_bandwidth_min_ratio=1.5`",
         (*VERIFY, "--expect", "pcie_bandwidth_min_ratio=1.5"), 2,
         r"pcie_bandwidth_min_ratio must be a number between 0 and 1, got '1\.5'"),
    Case("expect-twice", "expectation", "`--expect gpu_count=1 --expect gpu_count=2`",
         (*VERIFY, "--expect", "gpu_count=1", "--expect", "gpu_count=2"), 2,
         r"--expect gpu_count given twice with different values \('1' and '2'\)"),
    Case("expect-inventory-key", "expectation", "`dlsetup_expect: {gpu_cnt: 2}` in the inventory",
         ("verify", "-i", "{bad}", "{host}"), 2, r"host rel12: unknown expectation 'gpu_cnt'",
         _inventory({"dlsetup_expect": {"gpu_cnt": 2}})),
    Case("expect-provision", "expectation", "`provision --check --expect gpu_count=two`",
         ("provision", "-i", "{inv}", "{host}", "--check", "--expect", "gpu_count=two"), 2,
         r"gpu_count must be an integer, got 'two'", check=_nothing_ran),
    # -- pins -----------------------------------------------------------------------------------------------------
    Case("pin-no-value", "pin", "`--pin driver_branch`", (*PLAN_GOOD, "--pin", "driver_branch"), 2,
         r"--pin 'driver_branch': expected KEY=VALUE"),
    Case("pin-unknown-key", "pin", "`--pin drv=580`", (*PLAN_GOOD, "--pin", "drv=580"), 2,
         r"pin drv: unknown key"),
    Case("pin-not-a-branch", "pin", "`--pin driver_branch=abc`", (*PLAN_GOOD, "--pin", "driver_branch=abc"), 2,
         r"pin driver_branch: 'abc' is not a driver branch"),
    Case("pin-unknown-branch", "pin", "`--pin driver_branch=999`", (*PLAN_GOOD, "--pin", "driver_branch=999"), 2,
         r"pin driver_branch: no data for branch 999"),
    Case("pin-bad-flavor", "pin", "`--pin driver_flavor=closed`", (*PLAN_GOOD, "--pin", "driver_flavor=closed"), 2,
         r"pin driver_flavor: 'closed' is not one of open, proprietary"),
    Case("pin-bad-variant", "pin", "`--pin pytorch_variant=cu999`", (*OFFLINE, "--pin", "pytorch_variant=cu999"), 2,
         r"pin pytorch_variant: no data for cu999"),
    Case("pin-twice", "pin", "`--pin driver_branch=580 --pin driver_branch=570`",
         (*PLAN_GOOD, "--pin", "driver_branch=580", "--pin", "driver_branch=570"), 2,
         r"--pin driver_branch given twice with different values \('580' and '570'\)"),
    Case("pin-against-hardware", "pin", "`--pin driver_flavor=open` for the host's Pascal GPUs (after its facts)",
         (*PLAN_GOOD, "--pin", "driver_flavor=open"), 2, r"pin driver_flavor: open cannot drive Pascal"),
    Case("pin-inventory", "pin", "`dlsetup_pins: {driver_branch: abc}` in the inventory", PLAN, 2,
         r"host rel12: pin driver_branch: 'abc' is not a driver branch",
         _inventory({"dlsetup_pins": {"driver_branch": "abc"}})),
    Case("pin-diff", "pin", "`diff --pin driver_branch=abc`", ("diff", "-i", "{inv}", "{host}", "--pin",
         "driver_branch=abc"), 2, r"pin driver_branch: 'abc' is not a driver branch"),
    # -- options --------------------------------------------------------------------------------------------------
    Case("option-format", "option", "`--format xml`", ("facts", "-i", "{inv}", "{host}", "--format", "xml"), 2,
         r"^error: Invalid value for '--format': .*'xml' is not one of 'table', 'json'"),
    Case("option-unknown", "option", "`--frobnicate` (an option dlsetup does not have)",
         ("facts", "--frobnicate", "{host}"), 2, r"^error: No such option: --frobnicate", fixed=USAGE_ERROR),
    Case("option-tags-unknown", "option", "`provision --check --tags role::nope`",
         ("provision", "-i", "{inv}", "{host}", "--check", "--tags", "role::nope"), 2,
         r"unknown tag 'role::nope' for --tags", check=_nothing_ran),
    Case("option-tags-one-unknown", "option", "`--tags role::base,role::nope` (one of two unknown)",
         ("provision", "-i", "{inv}", "{host}", "--check", "--tags", "role::base,role::nope"), 2,
         r"unknown tag 'role::nope' for --tags", check=_nothing_ran),
    Case("option-no-consent", "option", "`provision` outside a terminal without `--yes`, a `y` piped in",
         ("provision", "-i", "{inv}", "{host}"), 2, r"there is no terminal to ask on: give --yes.*nothing was changed",
         stdin="y\n", check=_nothing_ran),
    Case("option-hosts-and-os", "option", "`plan HOST --os debian-12`", ("plan", "{host}", "--os", "debian-12"), 2,
         r"give either HOST\(s\) or --os, not both"),
    Case("option-plan-nothing", "option", "`plan` with neither HOST nor `--os`", ("plan",), 2,
         r"give HOST\(s\) to plan from live facts, or --os"),
    Case("option-nvidia-repo", "option", "`--nvidia-repo ftp://mirror`", (*PLAN_GOOD, "--nvidia-repo",
         "ftp://mirror.example/nvidia"), 2, r"nvidia repo 'ftp://\S+' is not an http\(s\):// or file:// address"),
    Case("option-repo-key", "option", "`--nvidia-repo-key XYZ`", (*PLAN_GOOD, "--nvidia-repo-key", "XYZ"), 2,
         r"nvidia repo key 'XYZ' is not an OpenPGP fingerprint"),
    Case("option-wheelhouse", "option", "`--wheelhouse wheels` (relative)", (*PLAN_GOOD, "--wheelhouse", "wheels"), 2,
         r"wheelhouse 'wheels' is not an absolute directory"),
    Case("option-pytorch-index", "option", "`--pytorch-index notaurl`", (*PLAN_GOOD, "--pytorch-index", "notaurl"), 2,
         r"pytorch index 'notaurl' is not an http\(s\):// or file:// address"),
    Case("option-pip-index", "option", "`--pip-index http://` (no host)", (*PLAN_GOOD, "--pip-index", "http://"), 2,
         r"pip index 'http://' is not an http\(s\):// or file:// address"),
    Case("option-arch", "option", "`gpus --arch Klingon`", ("gpus", "--arch", "Klingon"), 2,
         r"unknown architecture 'Klingon'"),
    Case("option-os", "option", "`plan --os windows-11`", ("plan", "--os", "windows-11"), 4,
         r"unsupported OS windows-11"),
    Case("option-gpu", "option", "`plan --os debian-12 --gpu 10de:ffff` (a GPU nobody knows)",
         ("plan", "--os", "debian-12", "--gpu", "10de:ffff"), 4, r"unknown GPU 10de:ffff"),
    # -- paths ----------------------------------------------------------------------------------------------------
    Case("path-junit-proc", "path", "`--junit-xml /proc/x`", (*VERIFY, "--junit-xml", "/proc/x"), 2,
         r"--junit-xml: /proc cannot be written", check=_nothing_ran),
    Case("path-junit-directory", "path", "`--junit-xml` names a directory", (*VERIFY, "--junit-xml", "{tmp}"), 2,
         r"--junit-xml: \S+ is a directory, give a file name", check=_nothing_ran),
    Case("path-junit-under-file", "path", "`--junit-xml` under a regular file (`/etc/hostname/report.xml`)",
         (*VERIFY, "--junit-xml", "/etc/hostname/report.xml"), 2,
         r"--junit-xml: /etc/hostname cannot be written \(/etc/hostname is not a directory\)", check=_nothing_ran),
    Case("path-state-file", "path", "`DLSETUP_STATE_DIR` is a regular file", ("facts", "-i", "{inv}", "{host}"), 2,
         r"the state directory \(DLSETUP_STATE_DIR\): \S+ cannot be written \(\S+ is not a directory\)",
         _state_dir(_state_is_file)),
    Case("path-state-proc", "path", "`DLSETUP_STATE_DIR=/proc/dlsetup` (cannot be made)",
         ("facts", "-i", "{inv}", "{host}"), 2, r"the state directory \(DLSETUP_STATE_DIR\): /proc/dlsetup cannot "
         "be written", _env(DLSETUP_STATE_DIR="/proc/dlsetup")),
    Case("path-state-read-only", "path", "`DLSETUP_STATE_DIR` on a read-only file system",
         ("facts", "-i", "{inv}", "{host}"), 2, r"the state directory \(DLSETUP_STATE_DIR\): \S+ cannot be written "
         r"\(.*Read-only file system\)", _state_dir(_state_read_only)),
    Case("path-state-runs-file", "path", "`runs` in the state directory is a regular file",
         ("facts", "-i", "{inv}", "{host}"), 2, r"the state directory \(DLSETUP_STATE_DIR\): \S+ cannot be written "
         r"\(\S+/runs is not a directory\)", _state_dir(_state_runs_is_file),
         fixed="the up-front check tried the state directory only: `runs/` being a file ended in 'internal error: "
         "FileExistsError' (exit 1)"),
    Case("path-init-existing", "path", "`init DIR` where DIR/hosts.yml exists", ("init", "{tmp}/inv"), 2,
         r"hosts\.yml exists already: dlsetup init never overwrites", _write("inv/hosts.yml", "all: {}\n")),
    Case("path-init-file", "path", "`init FILE` (a regular file)", ("init", "{bad}"), 2,
         r"\S+afile is not a directory", _write("afile", "x\n")),
    # -- environment ----------------------------------------------------------------------------------------------
    Case("env-ansible-config", "environment", "`ANSIBLE_CONFIG` names a file that is not INI",
         ("facts", "-i", "{inv}", "{host}"), 2, r"ansible\.cfg", _bad_ansible_config),
    Case("env-narrow-terminal", "environment", "`COLUMNS=20`: the cause stays one line",
         (*PLAN_GOOD, "--pin", "driver_branch=abc"), 2, r"^error: --pin: pin driver_branch: 'abc' is not a driver "
         r"branch \(three digits, e\.g\. 580\)$", _env(COLUMNS="20")),
    Case("env-c-locale", "environment", "`LC_ALL=C` and a non-ASCII inventory path (Ansible starts in UTF-8 "
         "locales only: dlsetup runs it in C.UTF-8)", ("facts", "-i", "{bad}", "{host}"), 0, None, _locale("C"),
         fixed="Ansible's refusal was reported as 'invalid inventory' (exit 2)"),
    Case("env-utf8-locale", "environment", "`LC_ALL=C.UTF-8` and a non-ASCII inventory path", ("facts", "-i",
         "{bad}", "{host}"), 0, None, _locale("C.UTF-8")),
    Case("env-no-home", "environment", "`HOME` unset", ("facts", "-i", "{inv}", "{host}"), 0, None,
         _drop_env("HOME")),
    Case("env-minimal-path", "environment", "`PATH=/usr/bin:/bin` (Ansible not on PATH)",
         ("facts", "-i", "{inv}", "{host}"), 0, None, _env(PATH="/usr/bin:/bin")),
    Case("env-ansible-overrides", "environment", "`ANSIBLE_LIBRARY`, `ANSIBLE_ROLES_PATH`, `ANSIBLE_REMOTE_USER` "
         "pointing elsewhere", ("facts", "-i", "{inv}", "{host}"), 0, None,
         _env(ANSIBLE_LIBRARY="{tmp}/none", ANSIBLE_ROLES_PATH="{tmp}/none", ANSIBLE_REMOTE_USER="nobody")),
    Case("env-secret", "environment", f"`ANSIBLE_BECOME_PASS={SECRET}`: never written to the run directory",
         ("facts", "-i", "{inv}", "{host}"), 0, None, _env(ANSIBLE_BECOME_PASS=SECRET), check=_no_secret),
    # -- signals (read-only phases: the host must stay as it was) -------------------------------------------------
    *(
        Case(f"signal-{name.lower()}-{phase}", "signal", f"{name} while {doing}", argv, 128 + signum,
             rf"^error: {name} stopped (the|reading)", interrupt=Interrupt(signum, kind, child, group=name == "SIGINT"))
        for phase, doing, argv, kind, child in (
            ("facts", "`facts` gathers", ("facts", "-i", "{inv}", "{host}"), "facts", "ansible-playbook"),
            ("plan", "`plan` gathers its facts", PLAN_GOOD, "facts", "ansible-playbook"),
            ("preflight", "`provision --check` runs its preflight",
             ("provision", "-i", "{inv}", "{host}", "--check", "--yes"), "preflight", "ansible-playbook"),
            ("verify", "`verify` runs its pytest suite", VERIFY, "verify", "pytest"),
        )
        for name, signum in (("SIGINT", signal.SIGINT), ("SIGTERM", signal.SIGTERM))
    ),
    # -- concurrency ----------------------------------------------------------------------------------------------
    Case("concurrent-verify", "concurrency", f"two `verify` at once, one state directory holding {OLD_RUNS} old "
         "runs", VERIFY, 0, None, _old_runs, parallel=2, check=_rotated),
    # -- disk -----------------------------------------------------------------------------------------------------
    Case("disk-full", "disk", "`DLSETUP_STATE_DIR` on a 64 KiB tmpfs filled up", ("facts", "-i", "{inv}", "{host}"),
         2, r"the state directory \(DLSETUP_STATE_DIR\): \S+ cannot be written \(.*No space left on device\)",
         _state_dir(_state_full),
         fixed="the up-front check created an empty file, which a full disk still allows: the run then ended in "
         "'internal error: OSError: [Errno 28] No space left on device' (exit 1)"),
    Case("disk-no-inodes", "disk", "`DLSETUP_STATE_DIR` on a tmpfs without a free inode",
         ("facts", "-i", "{inv}", "{host}"), 2,
         r"the state directory \(DLSETUP_STATE_DIR\): \S+ cannot be written \(.*No space left on device\)",
         _state_dir(_state_no_inodes)),
    # -- scale ----------------------------------------------------------------------------------------------------
    Case("inventory-10mb", "scale", f"a 10 MB inventory of {BIG_INVENTORY_HOSTS:,} hosts, the suite's host among "
         "them", ("facts", "-i", "{bad}", "{host}"), 0, None, _big_inventory, check=_small_leftovers,
         timeout_s=1200),
)
# fmt: on


# what issue 10's tries found before the fixes of its first parts (earlier commits), by the case that now guards it
FOUND_BEFORE = {
    "option-no-consent": "outside a terminal, provision applied without asking and without --yes; a piped 'n' was "
    "ignored",
    "option-tags-unknown": "an unknown --tags ran nothing, exited 0, and the verify after it said PASSED",
    "path-junit-proc": "--junit-xml /proc/x failed only after the whole run, as an internal error",
    "path-state-file": "a state directory that is a file was 'internal error', exit 1",
    "inventory-bare-host": "a host without host variables was 'unknown host'",
    "host-ipv6-port": "[::1]:22 became the host ::1_22, and the user saw 'the facts task did not run'",
    "inventory-empty-group": "an empty group was called unknown",
    "inventory-symlink-loop": "a symlink loop 'does not exist'",
    "inventory-module-failure": "a module failure on a reachable host was 'unreachable', the real cause (a missing "
    "interpreter) dropped; and dlsetup overrode the inventory's interpreter setting",
    "expect-twice": "a conflicting --expect given twice silently kept the last value",
    "pin-twice": "a conflicting --pin given twice silently kept the last value",
    "inventory-fifo": "-i on a FIFO hung forever",
    "env-secret": "ansible-runner's artifacts/*/command stored the whole environment (ANSIBLE_BECOME_PASS) for 30 "
    "runs, and every run left a /tmp/.ansible-runner-* folder",
    "inventory-secret": "a plaintext ansible_become_password was copied into /tmp/.ansible-runner-* event files and "
    "into runs/*/verify-inventory.yml (mode 0644)",
    "concurrent-verify": "rotation deleted a run folder another run was still writing: that run died with "
    "FileNotFoundError",
    "signal-sigterm-verify": "SIGTERM during verify left pytest running",
    "inventory-10mb": "a 10 MB inventory gave no answer in 10 minutes and left 1.5 GB",
}
CASES = tuple(replace(c, fixed=FOUND_BEFORE[c.id]) if c.id in FOUND_BEFORE and not c.fixed else c for c in CASES)
assert set(FOUND_BEFORE) <= {c.id for c in CASES}, "FOUND_BEFORE names a case that is not in the table"


def by_id() -> dict[str, Case]:
    cases = {c.id: c for c in CASES}
    assert len(cases) == len(CASES), "case ids must be unique"
    return cases
