"""The preflight's source check (roles/base/library/dlsetup_source_check.py) for real on this machine: keys made
by gpg, a flat apt repository signed with them and a PEP 503 page, served over HTTP on 127.0.0.1; apt-get and
apt-cache of this machine read the repository in a scratch directory. Then ``dlsetup provision localhost --check``
is refused by the preflight (exit 8) before anything runs."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_PATH = REPO / "roles" / "base" / "library" / "dlsetup_source_check.py"
TOOLS = ("gpg", "apt-get", "apt-cache")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason="needs gpg, apt-get and apt-cache (a Debian/Ubuntu machine)"
)


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dlsetup_source_check", MODULE_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SC = load_module()


class LocalModule:
    """What the check needs of AnsibleModule: run_command."""

    def run_command(self, args: list[str], environ_update: dict[str, str] | None = None) -> tuple[int, str, str]:
        done = subprocess.run(
            args, check=False, capture_output=True, text=True, env={**os.environ, **(environ_update or {})}
        )
        return done.returncode, done.stdout, done.stderr


class Key:
    """A throw-away OpenPGP key in its own GNUPGHOME."""

    def __init__(self, home: Path, algo: str) -> None:
        home.mkdir(mode=0o700, parents=True)
        self.home = home
        self.gpg("--quick-generate-key", "--passphrase", "", f"dlsetup test {algo} <test@dlsetup.invalid>", algo)
        colons = self.gpg("--with-colons", "--list-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        self.armored = self.gpg("--armor", "--export").stdout.encode()
        self.binary = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--export"], capture_output=True, check=True
        ).stdout

    def gpg(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback", *args],
            capture_output=True,
            text=True,
            check=True,
            input=input,
        )

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False, capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Key]]:
    base = tmp_path_factory.mktemp("keys")
    made = {
        "rsa": Key(base / "rsa", "rsa2048"),
        "ed25519": Key(base / "ed", "ed25519"),
        "other": Key(base / "o", "ed25519"),
    }
    yield made
    for key in made.values():
        key.close()


def flat_repository(root: Path, key: Key, packages: list[str], signer: Key | None = None) -> None:
    """A flat repository (``deb URL /``) like NVIDIA's: Packages, Release, InRelease, the key as 3bf863cc.pub."""
    root.mkdir(parents=True)
    stanzas = [
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <test@dlsetup.invalid>\n"
        f"Filename: ./{name}_1.0-1_all.deb\nSize: 1000\nSHA256: {'0' * 64}\nDescription: stand-in\n"
        for name in packages
    ]
    index = "\n".join(stanzas).encode()
    (root / "Packages").write_bytes(index)
    (root / "Packages.gz").write_bytes(gzip.compress(index, mtime=0))
    lines = ["Origin: NVIDIA", "Label: NVIDIA CUDA", "Date: Tue, 01 Dec 2026 00:00:00 UTC", "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        data = (root / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    release = "\n".join(lines) + "\n"
    (root / "Release").write_text(release)
    (root / "InRelease").write_text((signer or key).gpg("--clearsign", input=release).stdout)
    (root / "3bf863cc.pub").write_bytes(key.armored)


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- fingerprints -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["rsa", "ed25519"])
def test_fingerprints_are_gpgs(keys: dict[str, Key], algo: str) -> None:
    key = keys[algo]
    assert SC.primary_fingerprints(key.armored) == [key.fingerprint]
    assert SC.primary_fingerprints(key.binary) == [key.fingerprint]  # a dearmored keyring too
    # armor headers (Comment:, Version:) are skipped; the subkey's fingerprint is not the key's
    with_headers = key.armored.replace(b"-----\n\n", b"-----\nComment: a comment\nVersion: x\n\n", 1)
    assert SC.primary_fingerprints(with_headers) == [key.fingerprint]


def test_not_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="not OpenPGP data"):
        SC.primary_fingerprints(b"<html>404 Not Found</html>")


# -- the apt repository -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(keys: dict[str, Key], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("served")
    flat_repository(root / "good", keys["ed25519"], ["cuda-toolkit-12-9", "libnccl2"])
    flat_repository(root / "badsig", keys["ed25519"], ["cuda-toolkit-12-9"], signer=keys["other"])
    (root / "whl" / "cu126" / "torch").mkdir(parents=True)
    (root / "whl" / "cu126" / "torch" / "index.html").write_text(
        '<html><body><a href="/whl/cu126/torch-2.7.1%2Bcu126-cp311-cp311-manylinux_2_28_x86_64.whl">'
        "torch-2.7.1+cu126-cp311-cp311-manylinux_2_28_x86_64.whl</a></body></html>"
    )
    with serving(root) as url:
        yield url, root


def repo(url: str, key: Key, packages: list[str], fingerprint: str | None = None) -> dict[str, Any]:
    return {"url": url, "key_url": url + "3bf863cc.pub", "fingerprint": fingerprint or key.fingerprint,
            "packages": packages}  # fmt: skip


def test_a_signed_repository_with_the_pinned_key_and_the_packages_passes(served, keys) -> None:
    url = served[0] + "/good/"
    line = SC.check_apt_repository(LocalModule(), repo(url, keys["ed25519"], ["cuda-toolkit-12-9", "libnccl2"]), 10)
    assert line == f"{url}: signed by {keys['ed25519'].fingerprint}, offers the 2 planned package(s)"


def test_a_package_the_repository_lacks_is_named(served, keys) -> None:
    url = served[0] + "/good/"
    with pytest.raises(SC.SourceError) as caught:
        SC.check_apt_repository(LocalModule(), repo(url, keys["ed25519"], ["libnccl2", "cuda-drivers-580"]), 10)
    assert str(caught.value) == f"{url}: the repository does not offer cuda-drivers-580"


def test_a_key_other_than_the_pinned_one_is_not_trusted(served, keys) -> None:
    url = served[0] + "/good/"
    pinned = keys["rsa"].fingerprint
    with pytest.raises(SC.SourceError) as caught:
        SC.check_apt_repository(LocalModule(), repo(url, keys["ed25519"], [], fingerprint=pinned.lower()), 10)
    assert str(caught.value) == (
        f"{url}3bf863cc.pub: the key's fingerprint is {keys['ed25519'].fingerprint}, not the pinned {pinned}; "
        "it was not trusted"
    )


def test_a_repository_signed_by_another_key_fails_with_apts_reason(served, keys) -> None:
    url = served[0] + "/badsig/"
    with pytest.raises(SC.SourceError) as caught:
        SC.check_apt_repository(LocalModule(), repo(url, keys["ed25519"], ["cuda-toolkit-12-9"]), 10)
    assert caught.value.address == url
    assert "NO_PUBKEY" in caught.value.cause or "not signed" in caught.value.cause, caught.value.cause


def test_an_unreachable_repository_is_named_with_the_cause(keys) -> None:
    url = f"http://127.0.0.1:{closed_port()}/nv/"
    with pytest.raises(SC.SourceError) as caught:
        SC.check_apt_repository(LocalModule(), repo(url, keys["ed25519"], []), 10)
    assert caught.value.address == url + "3bf863cc.pub"
    assert caught.value.cause.startswith("cannot connect (") and "refused" in caught.value.cause


def test_the_check_leaves_no_scratch_directory(served, keys) -> None:
    before = {p.name for p in Path(tempfile.gettempdir()).glob("dlsetup-preflight-*")}
    SC.check_apt_repository(LocalModule(), repo(served[0] + "/good/", keys["ed25519"], ["libnccl2"]), 10)
    with pytest.raises(SC.SourceError):
        SC.check_apt_repository(LocalModule(), repo(served[0] + "/good/", keys["ed25519"], ["nothing-here"]), 10)
    assert {p.name for p in Path(tempfile.gettempdir()).glob("dlsetup-preflight-*")} == before


# -- wheel indexes and the wheelhouse ---------------------------------------------------------------------------


def test_an_index_that_lists_the_version_passes(served) -> None:
    index = {"url": served[0] + "/whl/cu126", "project": "torch", "version": "2.7.1"}
    assert SC.check_index(index, 10, {}) == f"{served[0]}/whl/cu126/torch/: lists torch 2.7.1"


def test_an_index_without_the_version_or_the_project_fails(served) -> None:
    with pytest.raises(SC.SourceError) as caught:
        SC.check_index({"url": served[0] + "/whl/cu126", "project": "torch", "version": "2.9.0"}, 10, {})
    assert str(caught.value) == f"{served[0]}/whl/cu126/torch/: lists no torch 2.9.0"
    with pytest.raises(SC.SourceError) as caught:
        SC.check_index({"url": served[0] + "/whl/cu126", "project": "jax", "version": ""}, 10, {})
    assert str(caught.value) == f"{served[0]}/whl/cu126/jax/: HTTP 404 File not found"


def test_an_empty_index_url_means_the_hosts_pip_configuration(tmp_path: Path, served) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {served[0]}/whl/cu126\n")
    settings = SC.pip_config(paths=(str(conf),), environ={})
    assert settings == {"index-url": f"{served[0]}/whl/cu126"}
    assert SC.check_index({"url": "", "project": "torch", "version": "2.7.1"}, 10, settings).endswith(
        "lists torch 2.7.1"
    )
    unset = SC.check_index({"url": "", "project": "jax", "version": ""}, 10, {})
    assert unset == "jax: pip's built-in default index (no index-url configured on the host): not checked"


def test_the_wheelhouse_must_exist_and_hold_wheels(tmp_path: Path) -> None:
    with pytest.raises(SC.SourceError, match="no such directory on the host"):
        SC.check_wheelhouse(str(tmp_path / "missing"))
    with pytest.raises(SC.SourceError, match="holds no wheels"):
        SC.check_wheelhouse(str(tmp_path))
    (tmp_path / "torch-2.7.1-py3-none-any.whl").write_bytes(b"")
    assert SC.check_wheelhouse(str(tmp_path)) == f"{tmp_path}: 1 wheel(s)"


# -- through dlsetup: the preflight refuses before anything runs --------------------------------------------------


def test_provision_check_is_refused_by_the_preflight_with_exit_8(served, tmp_path: Path) -> None:
    """This machine has no NVIDIA GPU: its plan is PyTorch's CPU build from the index given here, which does not
    list it. The preflight (a real Ansible run on localhost) refuses it; a check run changes nothing either way, so
    it still shows the whole dry run, and then exits 8."""
    env = {**os.environ, "DLSETUP_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "dlsetup", "provision", "localhost", "--check", "--pytorch-index",
         served[0] + "/whl", "--pip-index", served[0] + "/whl/cu126"],
        check=False, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 8, done.stdout + done.stderr
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: host localhost: {served[0]}/whl/cpu/torch/: HTTP 404"), first
    assert first.endswith("; nothing was changed")
    runs = sorted(p for p in (tmp_path / "state" / "runs").iterdir() if p.is_dir())  # not runs/.lock
    assert [p.name.split("-")[2] for p in runs] == ["facts", "preflight", "check"]
    assert "check mode: " in done.stdout and "task(s) would change; nothing was changed" in done.stdout
