"""Real Debian 12 and 13 test hosts for the integration layer.

Recipe (measured and explained in ``shared/research/harness.md``; usage in ``docs/testing.md``):

* **Roots**: one ``mmdebstrap --variant=apt`` root per release, built from this machine's own apt mirror and
  security URIs (``main`` only), cached under ``$DLSETUP_TEST_CACHE`` (default ``/var/cache/dlsetup-tests``) and
  keyed by release + a hash of the recipe; rebuilt after :data:`ROOT_MAX_AGE_S`.
* **Hosts**: an overlayfs on the cached root (upper/work dirs in a per-run temp dir), a network namespace with a
  veth ``/30`` (``10.200.N.1`` here, ``10.200.N.2`` in the host), booted with ``systemd-nspawn --boot``.
  Root logs in with a per-run ed25519 key; every host gets its own SSH host keys, collected with
  ``ssh-keyscan`` into a per-run ``known_hosts`` so host keys are always checked.
* **Egress**: none, except the allow-listing proxies of :mod:`proxy` on ``10.200.N.1`` (apt: this machine's
  Debian mirror hosts; HTTPS CONNECT: PyPI's hosts).

Everything started is recorded and stopped by :meth:`Harness.close`, including after failures and Ctrl-C.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from proxy import APT, CONNECT, FilteringProxy

LOG = logging.getLogger("dlsetup.tests.harness")
LOG.setLevel(logging.INFO)

# -- configuration ---------------------------------------------------------------------------------------------
RELEASES: dict[str, str] = {"bookworm": "12", "trixie": "13"}
ROOT_PACKAGES = (
    "python3",
    "python3-apt",
    "openssh-server",
    "sudo",
    "iproute2",
    "procps",
    "ca-certificates",
    "systemd",
    "systemd-sysv",
    "dbus",
    "pciutils",
)
# Bump to force a rebuild of every cached root when the recipe changes in a way the hash below cannot see.
RECIPE_VERSION = 1
ROOT_MAX_AGE_S = 7 * 24 * 3600
CACHE_ENV = "DLSETUP_TEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/dlsetup-tests")
BOOT_ENV = "DLSETUP_TEST_BOOT"  # "chroot" forces the chroot+sshd fallback
KEEP_ENV = "DLSETUP_TEST_KEEP"  # "1" keeps the per-run dir (logs, upper dirs) after teardown
STATE_DIR = Path("/run/dlsetup-tests")  # subnet locks and records of what each host started
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")

# PyPI is an allowed package registry for test hosts. These are pip's index and files hosts, used when this
# machine's pip configuration names no https index of its own.
PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")

APT_PROXY_PORT = 3142
HTTPS_PROXY_PORT = 3128
SUBNET_PREFIX = "10.200"
NSPAWN_SSH_TIMEOUT_S = 60.0
CHROOT_SSH_TIMEOUT_S = 20.0
SYSTEM_RUNNING_TIMEOUT_S = 120.0
NSPAWN_STOP_TIMEOUT_S = 30.0
NSPAWN_HALT_GRACE_S = 2.0  # after halt.target shows on the console
BUILD_TIMEOUT_S = 900.0

# Every timing measured in this process, for the pytest terminal summary.
TIMINGS: list[tuple[str, float]] = []
_TIMINGS_LOCK = threading.Lock()


class HarnessError(RuntimeError):
    """The harness could not build, boot or stop something."""


class HarnessClosing(HarnessError):
    """Raised in boot threads once :meth:`Harness.close` has started."""


def record_timing(label: str, seconds: float) -> None:
    with _TIMINGS_LOCK:
        TIMINGS.append((label, seconds))
    LOG.info("timing: %s: %.1f s", label, seconds)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    record_timing(label, time.monotonic() - start)


def missing_prerequisites() -> str | None:
    """Why this machine cannot run the integration layer, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, overlay mounts, systemd-nspawn)"
    missing = [
        tool
        for tool, package in (
            ("mmdebstrap", "mmdebstrap"),
            ("systemd-nspawn", "systemd-container"),
            ("ip", "iproute2"),
            ("ssh", "openssh-client"),
            ("ssh-keyscan", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
        )
        if shutil.which(tool) is None
    ]
    if missing:
        return f"integration tests need {', '.join(missing)} (apt-get install mmdebstrap systemd-container)"
    with contextlib.suppress(OSError):
        if "overlay" not in Path("/proc/filesystems").read_text():
            subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
            if "overlay" not in Path("/proc/filesystems").read_text():
                return "integration tests need overlayfs (modprobe overlay)"
    return None


# -- this machine's package sources ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Mirrors:
    """The Debian archive and security URIs this machine uses (never written into code)."""

    archive: str
    security: str

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset((urlsplit(u).hostname or "").lower() for u in (self.archive, self.security))


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0].isspace() and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def machine_mirrors(sources: Path = DEBIAN_SOURCES) -> Mirrors:
    """Read the archive and security URIs from this machine's deb822 (or one-line) apt sources."""
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    if sources.exists():
        for stanza in _deb822_stanzas(sources.read_text()):
            if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes") != "no":
                suites = stanza.get("suites", "").split()
                entries += [(uri, suites) for uri in stanza.get("uris", "").split()]
    else:
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    archive = next((u for u, s in entries if any(not x.endswith("-security") for x in s)), None)
    security = next((u for u, s in entries if any(x.endswith("-security") for x in s)), None)
    if archive is None or security is None:
        raise HarnessError(f"{sources} names no Debian archive and security mirror")
    for uri in (archive, security):
        if urlsplit(uri).scheme != "http":
            raise HarnessError(f"the test apt proxy forwards plain http only; this machine uses {uri}")
    return Mirrors(archive=archive.rstrip("/"), security=security.rstrip("/"))


@dataclass(frozen=True)
class PipIndex:
    """Where pip inside a test host may go: the index URLs to configure (if not PyPI) and the allowed hosts."""

    index_url: str | None
    extra_index_urls: tuple[str, ...]
    hosts: frozenset[str]


def machine_pip_index() -> PipIndex:
    """Derive pip's index hosts from this machine's pip configuration; PyPI's hosts when it sets none."""
    files = [
        Path("/etc/xdg/pip/pip.conf"),
        Path("/etc/pip.conf"),
        Path.home() / ".pip/pip.conf",
        Path.home() / ".config/pip/pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    parser = configparser.ConfigParser()
    parser.read([f for f in files if f.is_file()])
    index = os.environ.get("PIP_INDEX_URL") or parser.get("global", "index-url", fallback=None)
    extras = (os.environ.get("PIP_EXTRA_INDEX_URL") or parser.get("global", "extra-index-url", fallback="")).split()
    index = index if index and urlsplit(index).scheme == "https" else None
    https_extras = tuple(u for u in extras if urlsplit(u).scheme == "https")
    hosts = {(urlsplit(u).hostname or "").lower() for u in [*([index] if index else []), *https_extras]}
    if index is None:
        hosts |= set(PYPI_HOSTS)
    return PipIndex(index_url=index, extra_index_urls=https_extras, hosts=frozenset(hosts))


# -- roots -----------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def release_codename(release: str) -> str:
    """Accept ``bookworm``/``12`` or ``trixie``/``13``; return the codename."""
    for codename, version in RELEASES.items():
        if release in (codename, version):
            return codename
    raise ValueError(f"unsupported test release {release!r}; choose one of {sorted(RELEASES)}")


def _source_lines(release: str, mirrors: Mirrors) -> list[str]:
    # main only: the product's base role is what adds contrib non-free non-free-firmware.
    return [
        f"deb {mirrors.archive} {release} main",
        f"deb {mirrors.archive} {release}-updates main",
        f"deb {mirrors.security} {release}-security main",
    ]


def _extra_ca_files() -> list[Path]:
    if not EXTRA_CA_DIR.is_dir():
        return []
    return sorted(p for p in EXTRA_CA_DIR.rglob("*") if p.is_file() and p.suffix == ".crt")


def _customize_root(root: Path, release: str, mirrors: Mirrors) -> None:
    """Turn a fresh mmdebstrap tree into a root that many hosts can share (its source is part of the hash)."""
    # Each host gets its own SSH host keys, hostname, machine-id and resolv.conf at boot.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    # apt's daily timers would take the dpkg lock in the middle of a test run.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc/systemd/system/timers.target.wants" / timer).unlink(missing_ok=True)
        mask = root / "etc/systemd/system" / timer
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    # Lay sources out as a fresh install of each release does: one-line sources.list on 12, deb822 on 13.
    archive, updates, security = _source_lines(release, mirrors)
    if release == "bookworm":
        (root / "etc/apt/sources.list").write_text(f"{archive}\n{updates}\n{security}\n")
    else:
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            f"Types: deb\nURIs: {mirrors.archive}\nSuites: {release} {release}-updates\n"
            f"Components: main\nSigned-By: {keyring}\n\n"
            f"Types: deb\nURIs: {mirrors.security}\nSuites: {release}-security\n"
            f"Components: main\nSigned-By: {keyring}\n"
        )
    # mmdebstrap empties the lists but leaves a fresh mtime, which makes apt's cache_valid_time skip the update.
    os.utime(root / "var/lib/apt/lists", (946684800, 946684800))


def root_recipe(release: str, mirrors: Mirrors) -> dict[str, Any]:
    """Everything that decides a root's content; its hash names the cached root."""
    return {
        "version": RECIPE_VERSION,
        "release": release,
        "variant": "apt",
        "packages": list(ROOT_PACKAGES),
        "sources": _source_lines(release, mirrors),
        "ca": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in _extra_ca_files()},
        "customize": hashlib.sha256(inspect.getsource(_customize_root).encode()).hexdigest(),
    }


def _recipe_hash(recipe: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


class RootCache:
    """Cached roots under ``<cache>/roots``: ``<release>-<hash>/`` plus a ``.json`` stamp written last.

    A run holds a shared flock on ``<root>.inuse`` while its overlays use a root; pruning (old recipes, expired
    roots) removes only roots nobody holds. Building and pruning happen under ``<release>.lock``.
    """

    def __init__(self, base: Path, mirrors: Mirrors) -> None:
        self.dir = base / "roots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mirrors = mirrors
        self._held: list[int] = []
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def get(self, release: str, closing: threading.Event) -> Path:
        recipe = root_recipe(release, self.mirrors)
        root = self.dir / f"{release}-{_recipe_hash(recipe)}"
        stamp = root.with_name(root.name + ".json")
        with self._flock(self.dir / f"{release}.lock", fcntl.LOCK_EX):
            fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < ROOT_MAX_AGE_S
            if fresh and root.is_dir():
                LOG.info("root %s: cached (%s)", release, root)
            else:
                self._prune(release, keep=None)  # removes an expired root unless another run still uses it
                if root.is_dir() and stamp.exists():
                    LOG.warning("root %s: expired but in use by another run, reusing it this time", root.name)
                else:
                    with timed(f"root build {release}"):
                        self._build(release, root, recipe, closing)
            self._hold(root)
            self._prune(release, keep=root)
        return root

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def _hold(self, root: Path) -> None:
        fd = os.open(root.with_name(root.name + ".inuse"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        with self._lock:
            self._held.append(fd)

    def _prune(self, release: str, keep: Path | None) -> None:
        """Remove this release's other roots and leftovers of interrupted builds that no run is using."""
        for path in self.dir.glob(f"*{release}-*"):
            if not path.is_dir() or path == keep:
                continue
            if path.name.startswith(".tmp-"):  # an interrupted build: we hold the release lock, so it is dead
                shutil.rmtree(path, ignore_errors=True)
                continue
            inuse = path.with_name(path.name + ".inuse")
            fd = os.open(inuse, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                LOG.info("root %s: still used by another run, not pruned", path.name)
                os.close(fd)
                continue
            LOG.info("root %s: pruned", path.name)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)
            inuse.unlink(missing_ok=True)
            os.close(fd)

    def _build(self, release: str, root: Path, recipe: Mapping[str, Any], closing: threading.Event) -> None:
        tmp = self.dir / f".tmp-{root.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log_path = root.with_name(root.name + ".build.log")
        cmd = [
            "mmdebstrap",
            "--mode=root",
            "--variant=apt",
            "--include=" + ",".join(ROOT_PACKAGES),
        ]
        cas = _extra_ca_files()
        if cas:
            # This machine's extra CAs, so TLS through the CONNECT proxy verifies inside the hosts (harness §8).
            files = " ".join(shlex.quote(str(p)) for p in cas)
            cmd += [
                f'--customize-hook=cp -- {files} "$1/usr/local/share/ca-certificates/"',
                '--customize-hook=chroot "$1" update-ca-certificates',
            ]
        cmd += [release, str(tmp), *recipe["sources"]]
        LOG.info("root %s: building with mmdebstrap (log: %s)", release, log_path)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            with self._lock:
                self._procs.add(proc)
            try:
                rc = proc.wait(timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.terminate()
                rc = proc.wait()
            finally:
                with self._lock:
                    self._procs.discard(proc)
        if closing.is_set():
            shutil.rmtree(tmp, ignore_errors=True)
            raise HarnessClosing("harness closed during a root build")
        if rc != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            shutil.rmtree(tmp, ignore_errors=True)
            raise HarnessError(f"mmdebstrap {release} failed (rc {rc}):\n" + "\n".join(tail))
        _customize_root(tmp, release, self.mirrors)
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
        stamp = root.with_name(root.name + ".json")
        stamp.write_text(json.dumps({"built": time.time(), "recipe": recipe}, indent=2) + "\n")

    def stop_builds(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            proc.terminate()

    def release_all(self) -> None:
        with self._lock:
            for fd in self._held:
                os.close(fd)
            self._held.clear()


# -- hosts -----------------------------------------------------------------------------------------------------
@dataclass
class HostSpec:
    """What to boot: a name (also the hostname and ssh alias), a release, and optional extras.

    ``files`` maps absolute paths inside the host to contents, written into the overlay before boot.
    ``nspawn_args`` are appended to the systemd-nspawn command line (e.g. ``--bind-ro=SRC:DEST``; not under
    ``/sys``, which nspawn cannot bind into). With ``nspawn_args`` a failed boot raises instead of falling back.
    """

    name: str
    release: str = "bookworm"
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    nspawn_args: Sequence[str] = ()


@dataclass
class Host:
    """A booted test host. ``root`` is its merged root on this machine: files written there appear in the host."""

    name: str
    release: str  # codename: bookworm / trixie
    version_id: str  # 12 / 13
    subnet: int
    root: Path
    ssh_config: Path
    mode: str = "nspawn"  # or "chroot" (fallback: no systemd)
    boot_state: str = ""  # systemctl is-system-running after boot
    host_key: str = ""  # "ssh-ed25519 AAAA..."
    # internals
    _dir: Path = field(default=Path(), repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    _mounted: bool = field(default=False, repr=False)
    _netns: bool = field(default=False, repr=False)
    _listening: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        """The host's address (inside its namespace)."""
        return f"{SUBNET_PREFIX}.{self.subnet}.2"

    @property
    def gateway(self) -> str:
        """This machine's address on the host's veth: proxies listen here."""
        return f"{SUBNET_PREFIX}.{self.subnet}.1"

    @property
    def netns(self) -> str:
        return f"dlst{self.subnet}"

    @property
    def veth(self) -> str:
        return f"dlst{self.subnet}h"

    @property
    def console_log(self) -> Path:
        return self._dir / "console.log"

    def run(
        self, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as root on the host over SSH (host key checked); a list is shell-quoted."""
        command = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), self.name, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
        )

    def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> Path:
        """Write a file into the host (through the overlay); parents are created. Returns the path here."""
        return _write_into(self.root, path, content, mode)


def _write_into(root: Path, path: str, content: str | bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    target.chmod(mode)
    return target


class HostGroup(Sequence[Host]):
    """Hosts booted together: indexable by position or name, plus an inventory writer."""

    def __init__(self, harness: Harness, hosts: Iterable[Host]) -> None:
        self.harness = harness
        self._hosts = list(hosts)

    def __getitem__(self, key: int | str) -> Host:  # type: ignore[override]
        if isinstance(key, str):
            for host in self._hosts:
                if host.name == key:
                    return host
            raise KeyError(key)
        return self._hosts[key]

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self._hosts]

    @property
    def ssh_config(self) -> Path:
        return self.harness.ssh_config

    def write_inventory(self, path: Path | str, **kwargs: Any) -> Path:
        """See :meth:`Harness.write_inventory`; writes these hosts."""
        return self.harness.write_inventory(path, hosts=self._hosts, **kwargs)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _used_subnets() -> set[int]:
    used = {int(n) for n in re.findall(r"inet 10\.200\.(\d+)\.", _ip("-o", "-4", "addr", "show").stdout)}
    used |= {int(n) for n in re.findall(r"^dlst(\d+)\b", _ip("netns", "list").stdout, re.M)}
    used |= {int(n) for n in re.findall(r"^\d+: dlst(\d+)h[@:]", _ip("-o", "link", "show").stdout, re.M)}
    return used


def _pids_in_netns(netns_path: Path) -> list[int]:
    try:
        target = os.stat(netns_path).st_ino
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns/net").st_ino == target:
                pids.append(int(entry.name))
    return pids


def _describe_netns(netns: str) -> str:
    procs = []
    for pid in _pids_in_netns(Path("/run/netns") / netns):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            procs.append(f"{pid} {state} {cmd}")
    return "; ".join(procs) or "no processes left"


def _kill_netns_processes(netns_path: Path, timeout_s: float = 10.0) -> None:
    """SIGKILL whatever still runs in a test host's network namespace (an orphaned container)."""
    deadline = time.monotonic() + timeout_s
    while pids := _pids_in_netns(netns_path):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            LOG.warning("processes %s in %s survive SIGKILL", pids, netns_path)
            return
        time.sleep(0.1)


def _umount(path: Path) -> None:
    if not os.path.ismount(path):
        return
    if subprocess.run(["umount", "-R", str(path)], capture_output=True, check=False).returncode != 0:
        LOG.warning("umount %s busy, detaching lazily", path)
        subprocess.run(["umount", "-R", "-l", str(path)], capture_output=True, check=False)


def reap_stale() -> None:
    """Tear down hosts left by a harness that died without teardown (its subnet lock is no longer held)."""
    if not STATE_DIR.is_dir():
        return
    for record in STATE_DIR.glob("net*.json"):
        lock = record.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run owns it
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(record.read_text())
                LOG.warning("reaping stale test host %s left by pid %s", state.get("name"), state.get("pid"))
                netns = Path("/run/netns") / state["netns"]
                _kill_netns_processes(netns)
                _umount(Path(state["merged"]))
                _ip("netns", "del", state["netns"], check=False)
                _ip("link", "del", state["veth"], check=False)
            record.unlink(missing_ok=True)
        finally:
            os.close(fd)


class Harness:
    """One test run: run dir, SSH identity, known_hosts, ssh_config, proxies, and every host booted."""

    def __init__(self, cache: Path | None = None) -> None:
        self.mirrors = machine_mirrors()
        self.pip = machine_pip_index()
        self.cache = RootCache(cache or cache_dir(), self.mirrors)
        self.run_dir = Path(tempfile.mkdtemp(prefix="dlst-"))
        self.run_dir.chmod(0o700)
        (self.run_dir / "cm").mkdir()
        self.private_key = self.run_dir / "id_ed25519"
        self.known_hosts = self.run_dir / "known_hosts"
        self.ssh_config = self.run_dir / "ssh_config"
        self.known_hosts.touch()
        self.ssh_config.touch()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dlsetup-tests", "-f", str(self.private_key)],
            check=True,
        )
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dlsetup-boot")
        self._inventory_control_dirs: set[Path] = set()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        reap_stale()
        with contextlib.suppress(OSError):
            if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1":
                LOG.warning("IP forwarding is on here: test hosts could bypass the proxies if this machine NATs")
        self.proxy = FilteringProxy(apt_hosts=self.mirrors.hosts, connect_hosts=self.pip.hosts)
        LOG.info(
            "harness: run dir %s, apt proxy allows %s, CONNECT proxy allows %s",
            self.run_dir,
            sorted(self.mirrors.hosts),
            sorted(self.pip.hosts),
        )

    # -- booting -----------------------------------------------------------------------------------------------
    def boot(self, specs: Iterable[HostSpec]) -> HostGroup:
        """Boot hosts in parallel (building missing roots first, also in parallel); all or nothing."""
        specs = list(specs)
        with self._lock:
            names = [s.name for s in specs]
            clash = [n for n in names if n in self.hosts or names.count(n) > 1]
            if clash:
                raise ValueError(f"host names already in use: {sorted(set(clash))}")
        start = time.monotonic()
        futures = [self._pool.submit(self._boot_one, spec) for spec in specs]
        hosts, errors = [], []
        for future in futures:
            try:
                hosts.append(future.result())
            except Exception as exc:
                errors.append(exc)
        if errors:
            self.stop(hosts)
            raise errors[0]
        record_timing(f"boot {', '.join(names)} (wall, incl. any root build)", time.monotonic() - start)
        return HostGroup(self, hosts)

    def boot_host(self, name: str, release: str = "bookworm", **kwargs: Any) -> Host:
        """Boot one host; ``kwargs`` as in :class:`HostSpec`."""
        return self.boot([HostSpec(name, release, **kwargs)])[0]

    def _check_closing(self) -> None:
        if self._closing.is_set():
            raise HarnessClosing("harness is closing")

    def _boot_one(self, spec: HostSpec) -> Host:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", spec.name):
            raise ValueError(f"invalid host name {spec.name!r} (lower-case letters, digits, '-')")
        release = release_codename(spec.release)
        lower = self.cache.get(release, self._closing)
        self._check_closing()
        start = time.monotonic()
        subnet, lock_fd = self._allocate_subnet()
        host_dir = self.run_dir / "hosts" / spec.name
        if host_dir.exists():  # a host of this name ran before in this run
            host_dir.rename(host_dir.with_name(f"{spec.name}.{time.time_ns()}"))
        host = Host(
            name=spec.name,
            release=release,
            version_id=RELEASES[release],
            subnet=subnet,
            root=host_dir / "merged",
            ssh_config=self.ssh_config,
            _dir=host_dir,
            _lock_fd=lock_fd,
        )
        with self._lock:
            self.hosts[spec.name] = host
        self._write_state(host)
        try:
            self._mount(host, lower)
            self._prepare_files(host, spec)
            self._network(host)
            self._check_closing()
            booted = time.monotonic()
            forced = os.environ.get(BOOT_ENV) == "chroot"
            if forced:
                LOG.warning("%s: %s=chroot, booting with chroot+sshd", host.name, BOOT_ENV)
            else:
                try:
                    self._start_nspawn(host, spec)
                    self._wait_ssh(host, NSPAWN_SSH_TIMEOUT_S)
                except HarnessClosing:
                    raise
                except HarnessError as exc:
                    tail = host.console_log.read_text(errors="replace").splitlines()[-15:]
                    if spec.nspawn_args:  # the caller asked for nspawn features; chroot would silently drop them
                        raise HarnessError(f"{host.name}: nspawn failed ({exc}):\n" + "\n".join(tail)) from exc
                    LOG.warning(
                        "%s: systemd-nspawn could not boot (%s), falling back to chroot+sshd (no systemd); "
                        "console tail:\n%s",
                        host.name,
                        exc,
                        "\n".join(tail),
                    )
                    self._stop_process(host)
                    forced = True
            if forced:
                self._start_chroot(host)
                self._wait_ssh(host, CHROOT_SSH_TIMEOUT_S)
            ssh_ready = time.monotonic() - booted
            self._collect_host_key(host)
            self._write_ssh_config()
            if host.mode == "nspawn":
                state = host.run("systemctl is-system-running --wait", timeout=SYSTEM_RUNNING_TIMEOUT_S)
                host.boot_state = state.stdout.strip()
                if host.boot_state != "running":
                    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
                    LOG.warning("%s: system is %s; failed units: %s", host.name, host.boot_state, failed or "-")
            record_timing(
                f"host {host.name} ({host.mode}, {release}) up: ssh {ssh_ready:.1f} s",
                time.monotonic() - start,
            )
            return host
        except BaseException:
            self._stop_one(host)
            raise

    def _allocate_subnet(self) -> tuple[int, int]:
        with self._lock:  # one allocation at a time in this process; flocks guard against other runs
            used = _used_subnets()
            for n in range(1, 255):
                if n in used:
                    continue
                fd = os.open(STATE_DIR / f"net{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return n, fd
        raise HarnessError(f"no free {SUBNET_PREFIX}.N.0/30 subnet")

    def _write_state(self, host: Host) -> None:
        state = {
            "name": host.name,
            "pid": os.getpid(),
            "netns": host.netns,
            "veth": host.veth,
            "merged": str(host.root),
        }
        (STATE_DIR / f"net{host.subnet}.json").write_text(json.dumps(state) + "\n")

    def _mount(self, host: Host, lower: Path) -> None:
        for sub in ("upper", "work", "merged"):
            (host._dir / sub).mkdir(parents=True)
        opts = f"lowerdir={lower},upperdir={host._dir / 'upper'},workdir={host._dir / 'work'}"
        result = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(host.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise HarnessError(f"overlay mount for {host.name} failed: {result.stderr.strip()}")
        host._mounted = True

    def _prepare_files(self, host: Host, spec: HostSpec) -> None:
        root = host.root
        subprocess.run(["ssh-keygen", "-q", "-A", "-f", str(root)], check=True, capture_output=True)
        host.host_key = " ".join((root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])
        pub = self.private_key.with_suffix(".pub").read_text()
        (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        _write_into(root, "/root/.ssh/authorized_keys", pub, 0o600)
        _write_into(root, "/etc/hostname", f"{host.name}\n")
        # The hostname must resolve locally: otherwise getfqdn() waits on an unreachable DNS server.
        _write_into(
            root,
            "/etc/hosts",
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n"
            "::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
        )
        _write_into(root, "/etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        # No DNS in the namespace: the proxies resolve names. A local nameserver fails fast instead of timing out.
        _write_into(root, "/etc/resolv.conf", "# dlsetup test host: no DNS here\nnameserver 127.0.0.1\n")
        apt_proxy = f"http://{host.gateway}:{APT_PROXY_PORT}/"
        https_proxy = f"http://{host.gateway}:{HTTPS_PROXY_PORT}"
        _write_into(root, "/etc/apt/apt.conf.d/01dlsetup-test-proxy", f'Acquire::http::Proxy "{apt_proxy}";\n')
        _write_into(
            root,
            "/etc/environment",
            f"https_proxy={https_proxy}\nHTTPS_PROXY={https_proxy}\nno_proxy=localhost,127.0.0.1\n",
        )
        pip_conf = f"[global]\nproxy = {https_proxy}\n"
        if self.pip.index_url:
            pip_conf += f"index-url = {self.pip.index_url}\n"
        if self.pip.extra_index_urls:
            pip_conf += f"extra-index-url = {' '.join(self.pip.extra_index_urls)}\n"
        _write_into(root, "/etc/pip.conf", pip_conf)
        for path, content in spec.files.items():
            _write_into(root, path, content)

    def _network(self, host: Host) -> None:
        ns, veth = host.netns, host.veth
        _ip("netns", "add", ns)
        host._netns = True
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"{host.gateway}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/30", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "via", host.gateway)
        self.proxy.listen(host.gateway, APT_PROXY_PORT, APT)
        self.proxy.listen(host.gateway, HTTPS_PROXY_PORT, CONNECT)
        host._listening = True

    def _start_nspawn(self, host: Host, spec: HostSpec) -> None:
        cmd = [
            "systemd-nspawn",
            "-q",
            "-D",
            str(host.root),
            "-M",
            host.name,
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--network-namespace-path=/run/netns/{host.netns}",
            "--console=read-only",
            "--resolv-conf=off",
            *spec.nspawn_args,
        ]
        host.mode = "nspawn"
        with host.console_log.open("ab") as log:
            # setsid: Ctrl-C on the terminal must not reach the container; teardown stops it with SIGTERM.
            host._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _start_chroot(self, host: Host) -> None:
        m = shlex.quote(str(host.root))
        script = (
            "set -e\n"
            f"mount -t proc proc {m}/proc\n"
            f"mount -t sysfs -o ro sysfs {m}/sys\n"
            f"mount -t tmpfs tmpfs {m}/run\n"
            f"mkdir -p {m}/run/sshd\n"
            f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {m}/dev/pts\n"
            f"mount --bind {m}/dev/pts/ptmx {m}/dev/ptmx\n"
            f"mount -t tmpfs tmpfs {m}/tmp\n"
            f"hostname {shlex.quote(host.name)}\n"
            f"exec chroot {m} /usr/sbin/sshd -D -e\n"
        )
        cmd = ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--pid", "--uts", "--fork",
               "--kill-child", "--propagation", "private", "sh", "-c", script]  # fmt: skip
        host.mode = "chroot"
        with host.console_log.open("ab") as log:
            host._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_ssh(self, host: Host, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_closing()
            if host._proc is not None and host._proc.poll() is not None:
                raise HarnessError(f"{host.mode} for {host.name} exited with {host._proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((host.address, 22), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(4).startswith(b"SSH-"):
                    return
            if time.monotonic() > deadline:
                raise HarnessError(f"sshd on {host.name} ({host.address}) not answering after {timeout_s:.0f} s")
            time.sleep(0.1)

    def _collect_host_key(self, host: Host) -> None:
        result = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519", host.address],
            capture_output=True,
            text=True,
            check=False,
        )
        keys = [" ".join(line.split()[1:3]) for line in result.stdout.splitlines() if not line.startswith("#")]
        if host.host_key not in keys:
            raise HarnessError(f"ssh-keyscan {host.address} returned {keys}, expected the key made for {host.name}")
        with self._lock:
            lines = [ln for ln in self.known_hosts.read_text().splitlines() if not ln.startswith(host.address + " ")]
            lines.append(f"{host.address} {host.host_key}")
            _atomic_write(self.known_hosts, "\n".join(lines) + "\n")

    def _write_ssh_config(self) -> None:
        with self._lock:
            hosts = list(self.hosts.values())
            blocks = [
                f"Host {h.name} {h.address}\n"
                f"  HostName {h.address}\n"
                "  User root\n"
                f"  IdentityFile {self.private_key}\n"
                "  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n"
                "  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n"
                "  BatchMode yes\n"
                "  ConnectTimeout 10\n"
                "  LogLevel ERROR\n"
                "  ControlMaster auto\n"
                "  ControlPersist 60s\n"
                f"  ControlPath {self.run_dir}/cm/%C\n"
                for h in hosts
            ]
            _atomic_write(self.ssh_config, "\n".join(blocks))

    # -- inventories -------------------------------------------------------------------------------------------
    def ssh_common_args(self, known_hosts: Path | None = None) -> str:
        """``ansible_ssh_common_args``: host keys checked against ``known_hosts`` (the run's by default)."""
        known = Path(known_hosts or self.known_hosts)
        control = self.run_dir / "cm"
        if known != self.known_hosts:
            # Masters opened with other known_hosts must never be shared with (and skip checks for) these.
            control = self.run_dir / f"cm-{hashlib.sha256(str(known).encode()).hexdigest()[:8]}"
            control.mkdir(exist_ok=True)
        self._inventory_control_dirs.add(control)
        return (
            f"-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
            f"-o IdentitiesOnly=yes -o ControlMaster=auto -o ControlPersist=60s -o ControlPath={control}/%C"
        )

    def inventory_vars(self, host: Host, known_hosts: Path | None = None) -> dict[str, Any]:
        return {
            "ansible_host": host.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": self.ssh_common_args(known_hosts),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def write_inventory(
        self,
        path: Path | str,
        hosts: Iterable[Host] | None = None,
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        common_vars: Mapping[str, Any] | None = None,
        groups: Mapping[str, Iterable[str]] | None = None,
        known_hosts: Path | str | None = None,
    ) -> Path:
        """Write a YAML inventory for ``hosts`` (default: all live hosts).

        ``host_vars`` maps a host name to extra variables for it; ``common_vars`` go on every host (as ``all``
        vars); ``groups`` maps a group name to host names. ``known_hosts`` replaces the run's known_hosts
        (used to prove that host keys are checked).
        """
        with self._lock:
            chosen = list(hosts) if hosts is not None else list(self.hosts.values())
        host_vars = host_vars or {}
        unknown = set(host_vars) - {h.name for h in chosen}
        if unknown:
            raise ValueError(f"host_vars for hosts not in this inventory: {sorted(unknown)}")
        known = Path(known_hosts) if known_hosts else None
        inventory: dict[str, Any] = {
            "all": {"hosts": {h.name: {**self.inventory_vars(h, known), **host_vars.get(h.name, {})} for h in chosen}}
        }
        if common_vars:
            inventory["all"]["vars"] = dict(common_vars)
        if groups:
            inventory["all"]["children"] = {g: {"hosts": {n: None for n in names}} for g, names in groups.items()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    # -- teardown ----------------------------------------------------------------------------------------------
    def stop(self, hosts: Iterable[Host]) -> None:
        """Stop hosts in parallel (SIGTERM to nspawn is a clean poweroff of about 2 s each)."""
        hosts = list(hosts)
        if not hosts:
            return
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="dlsetup-stop") as pool:
            list(pool.map(self._stop_one_logged, hosts))
        record_timing(f"stop {', '.join(h.name for h in hosts)}", time.monotonic() - start)

    def _stop_one_logged(self, host: Host) -> None:
        try:
            self._stop_one(host)
        except Exception:
            LOG.exception("stopping %s failed", host.name)

    def _stop_process(self, host: Host) -> None:
        proc = host._proc
        if proc is None:
            return
        if proc.poll() is None:
            if host.mode == "nspawn":
                self._poweroff_nspawn(host, proc)
            else:
                proc.kill()  # unshare --fork blocks SIGTERM; --kill-child takes the pid namespace down
            proc.wait()
        host._proc = None
        if host._netns:
            _kill_netns_processes(Path("/run/netns") / host.netns)

    @staticmethod
    def _poweroff_nspawn(host: Host, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM: a clean halt. A second SIGTERM makes nspawn SIGKILL the container (its pid namespace).

        SIGKILL to nspawn itself would orphan the container. Now and then trixie's systemd reaches halt.target
        and then does not exit (only PID 1 and journald left); a second SIGTERM a moment later ends it.
        """
        proc.terminate()
        deadline = time.monotonic() + NSPAWN_STOP_TIMEOUT_S
        halted_at = None
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if halted_at is None:
                with contextlib.suppress(OSError):
                    if b"halt.target" in host.console_log.read_bytes()[-4096:]:
                        halted_at = time.monotonic()
            elif time.monotonic() - halted_at > NSPAWN_HALT_GRACE_S:
                break
        if proc.poll() is None:
            LOG.warning(
                "%s: not stopped after SIGTERM (%s), sending SIGTERM again",
                host.name,
                _describe_netns(host.netns),
            )
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                LOG.warning("%s: nspawn ignored a second SIGTERM, killing it", host.name)
                proc.kill()

    def _stop_one(self, host: Host) -> None:
        if host._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    ["ssh", "-F", str(self.ssh_config), "-O", "exit", host.name],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        self._stop_process(host)
        if host._mounted:
            _umount(host.root)
            host._mounted = False
        if host._listening:
            self.proxy.unlisten(host.gateway)
            host._listening = False
        if host._netns:
            _kill_netns_processes(Path("/run/netns") / host.netns)
            _ip("netns", "del", host.netns, check=False)
            host._netns = False
        if _ip("link", "show", "dev", host.veth, check=False).returncode == 0:
            _ip("link", "del", host.veth, check=False)
        (STATE_DIR / f"net{host.subnet}.json").unlink(missing_ok=True)
        if host._lock_fd is not None:
            os.close(host._lock_fd)
            host._lock_fd = None
        if os.environ.get(KEEP_ENV) != "1" and not os.path.ismount(host.root):
            shutil.rmtree(host._dir, ignore_errors=True)
        with self._lock:
            if self.hosts.get(host.name) is host:
                del self.hosts[host.name]
        self._write_ssh_config()

    def close(self) -> None:
        """Stop every host, the proxies and any build; remove the run dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self.cache.stop_builds()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            hosts = list(self.hosts.values())
        self.stop(hosts)
        self.proxy.stop()
        self.cache.release_all()
        self._kill_leftover_ssh()
        if os.environ.get(KEEP_ENV) == "1":
            LOG.info("harness: kept %s (%s=1)", self.run_dir, KEEP_ENV)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _kill_leftover_ssh(self) -> None:
        """End SSH control masters (ours and Ansible's) still holding sockets in the run dir."""
        needle = str(self.run_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if needle in cmdline and cmdline.startswith(b"ssh"):
                    os.kill(int(entry.name), signal.SIGTERM)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_parallel(hosts: Iterable[Host], fn: Callable[[Host], Any]) -> list[Any]:
    """Apply ``fn`` to each host in parallel threads; results in host order."""
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return list(pool.map(fn, hosts))
