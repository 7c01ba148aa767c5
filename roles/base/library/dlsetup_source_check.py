#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs on the managed host's Python (3.8+ on Ubuntu 22.04 / Debian 12): stdlib only, no newer syntax.
"""Read-only: can this host reach, and trust, the sources a plan installs from?"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dlsetup_source_check
short_description: Check from the host that a plan's package sources are reachable and trusted (read-only)
description:
  - For an apt repository (NVIDIA's CUDA repository or a mirror with its layout), downloads the signing key into a
    scratch directory, refuses it unless its OpenPGP fingerprint is the pinned one, then runs C(apt-get update) for
    that repository alone (scratch source list, lists and cache; the host's apt configuration, proxies included, is
    used as it is) and checks that the repository offers every package the plan takes from it.
  - For each wheel index, fetches the project's PEP 503 page and checks that the planned version is listed.
  - For a wheelhouse, checks that the directory exists and holds wheels.
  - Never writes outside its scratch directory, which it removes. The first problem fails the module with
    C(msg) "ADDRESS: CAUSE".
options:
  apt_repository:
    description: V(url) (a flat repository), V(key_url), V(fingerprint) (40 hex) and V(packages); empty to skip.
    type: dict
    default: {}
  indexes:
    description: Wheel indexes, each with V(url) (a PEP 503 index), V(project) and V(version) (may be empty).
    type: list
    elements: dict
    default: []
  wheelhouse:
    description: A directory of wheels that pip installs from alone; empty to skip.
    type: str
    default: ''
  timeout:
    description: Seconds for each download.
    type: int
    default: 30
author: dlsetup
"""

EXAMPLES = r"""
- name: Check the plan's sources from the host
  dlsetup_source_check:
    apt_repository:
      url: "{{ nvidia_driver_repo_url }}"
      key_url: "{{ nvidia_driver_repo_url }}/3bf863cc.pub"
      fingerprint: EB693B3035CD5710E231E123A4B469963BF863CC
      packages: [cuda-toolkit-12-9]
    indexes:
      - {url: "{{ dl_stack_torch_index_url }}", project: torch, version: "2.7.1"}
"""

RETURN = r"""
checked:
  description: One line per source checked, e.g. "URL: 3 packages offered".
  returned: always
  type: list
  elements: str
"""

import base64
import hashlib
import os
import re
import shutil
import tempfile
from configparser import ConfigParser
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import ProxyHandler, build_opener, proxy_bypass_environment

from ansible.module_utils.basic import AnsibleModule

PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf", "/root/.pip/pip.conf")


class SourceError(Exception):
    """One source that cannot be used: its address and the cause, shown as "ADDRESS: CAUSE"."""

    def __init__(self, address, cause):
        Exception.__init__(self, "%s: %s" % (address, cause))
        self.address = address
        self.cause = cause


# --- OpenPGP fingerprints (RFC 4880 §12.2 v4, RFC 9580 §5.5.4 v6) -------------------------------------------


def dearmor(data):
    """The binary OpenPGP data of an ASCII-armored block (or ``data`` itself when it is binary)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN PGP" not in text:
        return data if isinstance(data, bytes) else data.encode("latin-1")
    lines = text.replace("\r", "").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP"))
    body = []
    in_headers = True
    for line in lines[start + 1 :]:
        if line.startswith("-----END PGP"):
            break
        if in_headers:
            if not line.strip():
                in_headers = False
            elif ":" not in line:  # no armor headers at all
                in_headers = False
                body.append(line)
            continue
        body.append(line)
    payload = "".join(line.strip() for line in body if not line.startswith("="))
    return base64.b64decode(payload)


def packets(data):
    """(tag, body) of every OpenPGP packet in ``data`` (old and new formats)."""
    pos = 0
    out = []
    while pos < len(data):
        head = data[pos]
        if not head & 0x80:
            raise ValueError("not OpenPGP data (byte %d)" % pos)
        if head & 0x40:  # new format
            tag = head & 0x3F
            pos += 1
            first = data[pos]
            if first < 192:
                length, pos = first, pos + 1
            elif first < 224:
                length, pos = ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif first == 255:
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise ValueError("partial body lengths are not used in keys")
        else:  # old format
            tag = (head >> 2) & 0x0F
            kind = head & 0x03
            size = {0: 1, 1: 2, 2: 4}.get(kind)
            if size is None:
                raise ValueError("indeterminate packet length")
            length = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
            pos += 1 + size
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def primary_fingerprints(data):
    """Upper-case hex fingerprints of the primary keys (public-key packets, tag 6) in a key file."""
    result = []
    for tag, body in packets(dearmor(data)):
        if tag != 6 or not body:
            continue
        version = body[0]
        if version == 4:
            result.append(hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper())
        elif version == 6:
            result.append(hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper())
        else:
            raise ValueError("OpenPGP key version %d is not supported" % version)
    return result


def normal_fingerprint(value):
    return re.sub(r"\s+", "", value or "").upper()


# --- downloads ---------------------------------------------------------------------------------------------


def pip_config(paths=PIP_CONFIG_FILES, environ=None):
    """The host's pip settings that decide where and how pip downloads: index-url and proxy."""
    environ = os.environ if environ is None else environ
    parser = ConfigParser()
    parser.read([p for p in paths if os.path.isfile(p)])
    settings = {}
    for key in ("index-url", "proxy"):
        for section in ("global", "install"):
            if parser.has_option(section, key):
                settings[key] = parser.get(section, key).strip()
    for key, env in (("index-url", "PIP_INDEX_URL"), ("proxy", "PIP_PROXY")):
        if environ.get(env):
            settings[key] = environ[env]
    return settings


def opener_for(url, proxy=None):
    """A urllib opener that goes the way pip would: through ``proxy`` (pip's) unless no_proxy names the host,
    else through the environment's http(s)_proxy."""
    host = urlsplit(url).hostname or ""
    if proxy and not proxy_bypass_environment(host):
        return build_opener(ProxyHandler({"http": proxy, "https": proxy}))
    return build_opener()


def fetch(url, timeout, proxy=None):
    try:
        response = opener_for(url, proxy).open(url, timeout=timeout)
        try:
            return response.read()
        finally:
            response.close()
    except HTTPError as exc:
        raise SourceError(url, "HTTP %s %s" % (exc.code, exc.reason)) from None
    except URLError as exc:
        raise SourceError(url, "cannot connect (%s)" % (exc.reason,)) from None
    except OSError as exc:  # timeouts, resets
        raise SourceError(url, "cannot download (%s)" % (exc,)) from None


# --- the checks ----------------------------------------------------------------------------------------------


def apt_cause(output):
    """The line of apt-get's output that says why a repository could not be read."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for prefix in ("Err:", "E:", "W: Failed to fetch", "W: GPG error", "W:"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            if prefix == "Err:":  # "Err:1 URL InRelease" is followed by the reason on the next line
                index = lines.index(found[0])
                if index + 1 < len(lines):
                    return "%s %s" % (found[0].split(" ", 1)[-1], lines[index + 1])
            return found[-1]
    return lines[-1] if lines else "apt-get update failed"


def missing_packages(policy_output, packages):
    """Packages that ``apt-cache policy`` shows without a candidate, or not at all."""
    candidates = {}
    current = None
    for line in policy_output.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
        elif current and line.strip().startswith("Candidate:"):
            candidates[current] = line.split(":", 1)[1].strip()
    return [p for p in packages if candidates.get(p, "(none)") == "(none)"]


def check_apt_repository(module, repo, timeout):
    url = repo["url"].rstrip("/") + "/"
    key_url = repo.get("key_url") or url + "3bf863cc.pub"
    pinned = normal_fingerprint(repo.get("fingerprint"))
    key = fetch(key_url, timeout)
    try:
        found = primary_fingerprints(key)
    except (ValueError, IndexError) as exc:
        raise SourceError(key_url, "not an OpenPGP key (%s); nothing was trusted" % exc) from None
    if found != [pinned]:
        raise SourceError(
            key_url,
            "the key's fingerprint is %s, not the pinned %s; it was not trusted" % (", ".join(found) or "none", pinned),
        )
    scratch = tempfile.mkdtemp(prefix="dlsetup-preflight-")
    try:
        os.chmod(scratch, 0o755)  # apt's download sandbox user must reach lists/partial
        for sub in ("lists/partial", "cache/archives/partial", "parts", "prefs"):
            os.makedirs(os.path.join(scratch, sub))
        key_file = os.path.join(scratch, "key.asc" if b"-----BEGIN PGP" in key else "key.gpg")
        with open(key_file, "wb") as handle:
            handle.write(key)
        os.chmod(key_file, 0o644)
        source = os.path.join(scratch, "source.list")
        with open(source, "w") as handle:
            handle.write("deb [signed-by=%s] %s /\n" % (key_file, url))
        options = [
            "-o", "Dir::Etc::SourceList=%s" % source,
            "-o", "Dir::Etc::SourceParts=%s" % os.path.join(scratch, "parts"),
            "-o", "Dir::Etc::Preferences=%s" % os.path.join(scratch, "preferences"),
            "-o", "Dir::Etc::PreferencesParts=%s" % os.path.join(scratch, "prefs"),
            "-o", "Dir::State::Lists=%s" % os.path.join(scratch, "lists"),
            "-o", "Dir::Cache=%s" % os.path.join(scratch, "cache"),
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "APT::Get::List-Cleanup=false",
        ]  # fmt: skip
        env = {"LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        rc, out, err = module.run_command(["apt-get", "-q", "update", *options], environ_update=env)
        lists = [n for n in os.listdir(os.path.join(scratch, "lists")) if "Packages" in n]
        if rc != 0 or not lists:
            raise SourceError(url, apt_cause(out + "\n" + err))
        packages = list(repo.get("packages") or [])
        if packages:
            rc, out, err = module.run_command(["apt-cache", "policy", *options, *packages], environ_update=env)
            missing = missing_packages(out, packages) if rc == 0 else packages
            if missing:
                raise SourceError(url, "the repository does not offer %s" % ", ".join(missing))
        return "%s: signed by %s, offers the %d planned package(s)" % (url, pinned, len(packages))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def index_lists(page, project, version):
    """Whether a PEP 503 project page lists ``version`` (any local variant: torch-2.7.1+cu126-...)."""
    if not version:
        return True
    name = re.sub(r"[-_.]+", "_", project)
    pattern = r"(?i)(?:^|[/\">])%s-%s(?:\+[a-z0-9.]+)?(?:-|\.tar\.gz)" % (re.escape(name), re.escape(version))
    return re.search(pattern, page) is not None


def check_index(index, timeout, pip_settings):
    base = (index.get("url") or pip_settings.get("index-url") or "").rstrip("/")
    project = index["project"]
    if not base:
        return "%s: pip's built-in default index (no index-url configured on the host): not checked" % project
    page_url = "%s/%s/" % (base, re.sub(r"[-_.]+", "-", project).lower())
    page = fetch(page_url, timeout, pip_settings.get("proxy")).decode("utf-8", "replace")
    version = index.get("version") or ""
    if not index_lists(page, project, version):
        raise SourceError(page_url, "lists no %s %s" % (project, version))
    return "%s: lists %s %s" % (page_url, project, version or "(any version)")


def check_wheelhouse(path):
    if not os.path.isdir(path):
        raise SourceError(path, "no such directory on the host")
    wheels = [n for n in os.listdir(path) if n.endswith(".whl")]
    if not wheels:
        raise SourceError(path, "holds no wheels")
    return "%s: %d wheel(s)" % (path, len(wheels))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            apt_repository=dict(type="dict", default={}),
            indexes=dict(type="list", elements="dict", default=[]),
            wheelhouse=dict(type="str", default=""),
            timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    params = module.params
    checked = []
    try:
        if params["apt_repository"]:
            checked.append(check_apt_repository(module, params["apt_repository"], params["timeout"]))
        if params["wheelhouse"]:
            checked.append(check_wheelhouse(params["wheelhouse"]))
        else:
            settings = pip_config()
            for index in params["indexes"]:
                checked.append(check_index(index, params["timeout"], settings))
    except SourceError as problem:
        module.fail_json(msg=str(problem), address=problem.address, cause=problem.cause, checked=checked)
    module.exit_json(changed=False, checked=checked)


if __name__ == "__main__":
    main()
