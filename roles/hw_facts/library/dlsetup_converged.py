#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs on the managed host's Python (3.8+ on Ubuntu 22.04 / Debian 12): stdlib only, no newer syntax.
"""Ansible module: read the state a provision converged to, so that the next run can tell it is still there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dlsetup_converged
short_description: Probe the converged state of a provision (packages, holds, managed files, the framework venv)
description:
  - Reads, without changing anything, what a provision leaves behind and what a later change would alter
    (dlsetup compares the result with the one the last provision recorded, and runs the roles only where they
    differ), in one call.
  - For each package, its installed version (or null) and whether dpkg holds it, from one C(dpkg-query).
  - For each file, its SHA-256 (null when absent, C(unreadable) when it cannot be read).
  - For each virtual environment, where its link points, whether its interpreter runs, and a digest of the
    distributions installed in it (the names and versions of its C(*.dist-info) folders).
  - With I(record) instead of I(spec), the spec is the one stored in that record (the C(converged.spec) of
    dlsetup's state file): a host with no record, or a record without a spec, returns C(probe=null).
options:
  spec:
    description: What to probe, C({packages, files, venvs}), each a list.
    type: dict
  record:
    description: A dlsetup state record (JSON) whose C(converged.spec) says what to probe.
    type: path
"""

EXAMPLES = r"""
- name: Probe the converged state the last provision recorded
  dlsetup_converged:
    record: /etc/ansible/facts.d/dlsetup.fact
"""

RETURN = r"""
probe:
  description: C({packages, files, venvs}), each a mapping from name or path to what was read; null without a spec.
  type: dict
  returned: always
"""

import glob
import hashlib
import json
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

UNREADABLE = "unreadable"


def probe_packages(names):
    """``{name: {"version": str|None, "hold": bool}}`` from one dpkg-query (names dpkg does not know: None)."""
    found = dict((name, {"version": None, "hold": False}) for name in names)
    if not names:
        return found
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Status}\n", *names],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            check=False,
            env=dict(os.environ, LC_ALL="C"),
        )
    except OSError:
        return dict((name, UNREADABLE) for name in names)
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] not in found:
            continue
        status = parts[2].split()
        installed = len(status) == 3 and status[2] in ("installed", "half-configured", "unpacked")
        found[parts[0]] = {
            "version": parts[1] if installed and status[2] == "installed" else None,
            "hold": bool(status) and status[0] == "hold",
        }
    return found


def probe_file(path):
    if not os.path.lexists(path):
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    except (IOError, OSError):
        return UNREADABLE
    return digest.hexdigest()


def probe_venv(path):
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    python = os.path.join(real, "bin", "python")
    dists = sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(real, "lib", "python*", "site-packages", "*.dist-info"))
    )
    runs = False
    if os.path.exists(python):
        try:
            runs = subprocess.run([python, "-c", ""], check=False, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0  # fmt: skip
        except OSError:
            runs = False
    return {
        "target": real,
        "python_runs": runs,
        "distributions": len(dists),
        "digest": hashlib.sha256("\n".join(dists).encode("utf-8")).hexdigest(),
    }


def probe(spec):
    return {
        "packages": probe_packages(sorted(set(spec.get("packages") or []))),
        "files": dict((p, probe_file(p)) for p in sorted(set(spec.get("files") or []))),
        "venvs": dict((p, probe_venv(p)) for p in sorted(set(spec.get("venvs") or []))),
    }


def spec_of_record(path):
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    converged = record.get("converged") if isinstance(record, dict) else None
    spec = converged.get("spec") if isinstance(converged, dict) else None
    return spec if isinstance(spec, dict) else None


def main():
    module = AnsibleModule(
        argument_spec=dict(spec=dict(type="dict"), record=dict(type="path")),
        mutually_exclusive=[("spec", "record")],
        required_one_of=[("spec", "record")],
        supports_check_mode=True,
    )
    spec = module.params["spec"]
    if spec is None:
        spec = spec_of_record(module.params["record"])
    module.exit_json(changed=False, probe=probe(spec) if spec is not None else None)


if __name__ == "__main__":
    main()
