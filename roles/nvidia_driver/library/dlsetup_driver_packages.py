#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs on the managed host's Python (3.8+ on Ubuntu 22.04 / Debian 12): stdlib only, no newer syntax.
"""Ansible module: the NVIDIA driver's packages changed in one apt transaction, put back if it fails."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dlsetup_driver_packages
short_description: Install the planned driver packages and remove those of another plan in one apt transaction
description:
  - Works out what has to change (planned packages missing or installed at a version of another branch; the
    packages of another flavour or branch; what dlsetup installed earlier and no longer needs), simulates it with
    C(apt-get -s) and releases exactly the dpkg holds on packages the transaction changes.
  - Runs the removals and installs as one C(apt-get install) (C(pkg) and C(pkg=version) to install, C(pkg-) to
    remove), so apt solves them together and never leaves the host between two drivers.
  - If the transaction fails, the packages it changed are put back at the versions they had (one more apt
    transaction), with their holds and apt's auto-installed marks, and the module fails with apt's cause.
  - Keeps a record (I(record)) of the packages dlsetup installed, so it removes only what it installed and no
    longer needs, never a package the user installed.
  - Holds the planned packages afterwards (or releases them with I(hold=false)).
  - Check mode simulates and changes nothing; packages apt does not know yet (their repository is added by the
    same run) are listed instead.
options:
  install:
    description: Planned packages, C(name) or C(name=version), in order.
    type: list
    elements: str
    required: true
  version_regex:
    description:
      - Regular expression an installed planned package's version must match where that version is a driver
        version (three digits and a dot); one that does not is changed to the pinned candidate in the transaction.
    type: str
    default: ""
  remove:
    description: Installed packages of another flavour or branch, removed in the same transaction.
    type: list
    elements: str
    default: []
  families:
    description: Package name patterns (fnmatch) of the driver's families; their state is named in messages.
    type: list
    elements: str
    default: []
  hold:
    description: Hold the planned packages after the change (false releases their holds).
    type: bool
    default: true
  install_recommends:
    description: Install recommended packages too.
    type: bool
    default: true
  record:
    description: The JSON file that records what dlsetup installed.
    type: path
    default: /var/lib/dlsetup/nvidia-driver-packages.json
  lock_timeout:
    description: Seconds to wait for the dpkg lock.
    type: int
    default: 600
"""

RETURN = r"""
install:
  description: What the transaction installs or changes (C(name) or C(name=version)).
  type: list
remove:
  description: What the transaction removes.
  type: list
released_holds:
  description: Holds released because the transaction changes those packages.
  type: list
packages_changed:
  description: Whether packages were installed, changed or removed.
  type: bool
previous:
  description: The driver's packages before, as C(name=version).
  type: list
restored:
  description: On failure, whether everything was put back.
  type: bool
"""

import fnmatch
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

DRIVER_VERSION = re.compile(r"^([0-9]+:)?[0-9]{3}\.")
ACTION = re.compile(r"^(Inst|Remv|Purg) (\S+)")
ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "LANG": "C"}


class Snapshot(object):
    """Every package dpkg knows: version, selection, installed or not; and apt's auto-installed marks."""

    def __init__(self, module):
        rc, out, err = module.run_command(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${Status}\n"], environ_update=ENV
        )
        if rc != 0:
            module.fail_json(msg="dpkg-query failed: %s" % err.strip())
        self.versions = {}
        self.selections = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            name, version, status = parts
            words = status.split()
            self.selections[name] = words[0] if words else ""
            if words and words[-1] == "installed":
                self.versions[name] = version
        rc, out, err = module.run_command(["apt-mark", "showauto"], environ_update=ENV)
        self.auto = set(out.split()) if rc == 0 else set()

    def installed(self, name):
        return name in self.versions

    def held(self):
        return set(n for n, s in self.selections.items() if s == "hold")


def apt_get(module, args, lock_timeout, simulate=False, recommends=True):
    argv = ["apt-get", "-y", "-q"]
    if simulate:
        # the simulation shows what the transaction changes, held packages included (their holds are released
        # before the real run, which does not get this option)
        argv += ["-s", "--allow-change-held-packages"]
    argv += [
        "-o", "DPkg::Lock::Timeout=%d" % lock_timeout,
        # holds are released by this module, exactly for the packages the simulated transaction changes: the
        # solver must not work around them (Debian 12's apt refuses with "held packages" otherwise)
        "-o", "APT::Ignore-Hold=true",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        "--allow-downgrades",
    ]  # fmt: skip
    if not recommends:
        argv.append("--no-install-recommends")
    return module.run_command([*argv, "install", *args], environ_update=ENV)


def actions(output):
    found = []
    for line in output.splitlines():
        match = ACTION.match(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def apt_errors(out, err):
    """apt's own reasons (its E: lines), else the last line it printed."""
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip().startswith("E:")]
    if lines:
        return "\n".join(lines)
    text = (err or out).strip().splitlines()
    return text[-1] if text else "apt-get failed"


def set_selections(module, selections):
    if not selections:
        return
    text = "".join("%s %s\n" % (name, sel) for name, sel in sorted(selections.items()))
    rc, _out, err = module.run_command(["dpkg", "--set-selections"], data=text, environ_update=ENV)
    if rc != 0:
        raise RuntimeError("dpkg --set-selections failed: %s" % err.strip())


def read_record(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        return {"installed": [], "requested": []}
    return {
        "installed": [str(n) for n in data.get("installed", [])],
        "requested": [str(n) for n in data.get("requested", [])],
    }


def write_record(path, record):
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def restore(module, before, lock_timeout):
    """Put back every package the failed transaction changed, then the holds and the auto marks. Returns the
    error text, or None when everything is back."""
    now = Snapshot(module)
    if now.versions != before.versions:
        rc, out, err = module.run_command(["dpkg", "--audit"], environ_update=ENV)
        if out.strip():  # a package left half-configured: let dpkg finish before apt can act
            module.run_command(["dpkg", "--configure", "-a"], environ_update=ENV)
        specs = ["%s=%s" % (n, v) for n, v in sorted(before.versions.items()) if now.versions.get(n) != v]
        specs += ["%s-" % n for n in sorted(set(now.versions) - set(before.versions))]
        rc, out, err = apt_get(module, ["--allow-change-held-packages", *specs], lock_timeout, recommends=False)
        if rc != 0:
            return "apt-get install %s: %s" % (" ".join(specs), apt_errors(out, err))
        now = Snapshot(module)
    try:
        set_selections(
            module,
            dict(
                (n, before.selections[n])
                for n in now.versions
                if n in before.selections and now.selections.get(n) != before.selections[n]
            ),
        )
    except RuntimeError as exc:
        return str(exc)
    for mark, names in (
        ("auto", sorted(n for n in before.auto - now.auto if n in now.versions)),
        ("manual", sorted(n for n in now.auto - before.auto if n in before.versions and n in now.versions)),
    ):
        if names:
            module.run_command(["apt-mark", mark, *names], environ_update=ENV)
    left = Snapshot(module)
    if left.versions != before.versions:
        names = set(left.versions) | set(before.versions)
        differ = sorted(n for n in names if left.versions.get(n) != before.versions.get(n))
        return "still changed: %s" % ", ".join(differ)
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            install=dict(type="list", elements="str", required=True),
            version_regex=dict(type="str", default=""),
            remove=dict(type="list", elements="str", default=[]),
            families=dict(type="list", elements="str", default=[]),
            hold=dict(type="bool", default=True),
            install_recommends=dict(type="bool", default=True),
            record=dict(type="path", default="/var/lib/dlsetup/nvidia-driver-packages.json"),
            lock_timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    params = module.params
    lock_timeout = params["lock_timeout"]
    recommends = params["install_recommends"]
    wanted = [(spec.split("=", 1)[0], spec.split("=", 1)[1] if "=" in spec else None) for spec in params["install"]]
    wanted_names = [name for name, _ in wanted]
    version_regex = re.compile(params["version_regex"]) if params["version_regex"] else None
    before = Snapshot(module)
    record = read_record(params["record"])
    families = params["families"]

    def ours(name):
        return (
            name in wanted_names
            or name in params["remove"]
            or name in record["installed"]
            or any(fnmatch.fnmatchcase(name, pattern) for pattern in families)
        )

    previous = ["%s=%s" % (n, v) for n, v in sorted(before.versions.items()) if ours(n)]

    # what the transaction installs: planned packages missing, or at a version of another plan
    install = []
    for name, version in wanted:
        current = before.versions.get(name)
        if version is not None:
            if current is None or not current.startswith(version):
                install.append("%s=%s" % (name, version))
            continue
        other_branch = (
            current is not None
            and version_regex is not None
            and DRIVER_VERSION.match(current) is not None
            and version_regex.match(current) is None
        )
        if current is None or other_branch:
            install.append(name)
    remove = [n for n in params["remove"] if before.installed(n) and n not in wanted_names]
    # what dlsetup asked for before and the plan no longer names: removed if nothing planned needs it
    stale = [
        n
        for n in record["requested"]
        if n in record["installed"] and before.installed(n) and n not in wanted_names and n not in remove
    ]

    def simulate(removals, autoremove=False):
        args = install + ["%s-" % n for n in removals]
        if not args and not autoremove:
            return 0, "", "", []
        extra = ["--autoremove"] if autoremove else []
        rc, out, err = apt_get(module, extra + args, lock_timeout, simulate=True, recommends=recommends)
        return rc, out, err, actions(out)

    rc, out, err, planned = simulate(remove + stale)
    kept = []
    if rc != 0 and stale:
        kept, stale = stale, []  # still needed by the planned packages: they stay
        rc, out, err, planned = simulate(remove)
    result = dict(
        changed=False,
        packages_changed=False,
        install=install,
        remove=[],
        released_holds=[],
        previous=previous,
        kept=kept,
    )
    if rc != 0:
        unknown = [n for n, _ in wanted if ("Unable to locate package %s" % n) in err + out]
        if module.check_mode and unknown:
            result.update(
                changed=True,
                remove=remove + stale,
                unknown=unknown,
                msg="check mode: apt does not know %s yet (its source is added by this same run); a real run "
                "installs %s and removes %s in one transaction"
                % (", ".join(unknown), ", ".join(install) or "nothing", ", ".join(remove + stale) or "nothing"),
            )
            module.exit_json(**result)
        result.update(stdout=out, stderr=err, restored=True, restore_error="")
        module.fail_json(msg=apt_errors(out, err), **result)
    # what the transaction leaves unneeded (apt's autoremove, simulated): only what dlsetup installed of it goes
    garbage = set()
    if record["installed"]:
        rc, out, err, with_garbage = simulate(remove + stale, autoremove=True)
        if rc == 0:
            garbage = set(n for verb, n in with_garbage if verb in ("Remv", "Purg")) - set(
                n for verb, n in planned if verb in ("Remv", "Purg")
            )
    unneeded = sorted(garbage & set(record["installed"]) - set(wanted_names) - set(remove) - set(stale))
    removals = remove + stale + unneeded
    touched = set(n for _, n in planned) | set(unneeded)
    blocking = sorted(touched & before.held())
    result.update(remove=removals, released_holds=blocking)

    transaction = install + ["%s-" % n for n in removals]
    if transaction:
        result.update(changed=True, packages_changed=True)
        if not module.check_mode:
            try:
                set_selections(module, dict((n, "install") for n in blocking))
                rc, out, err = apt_get(module, transaction, lock_timeout, recommends=recommends)
                failure = None if rc == 0 else apt_errors(out, err)
            except RuntimeError as exc:
                rc, out, err, failure = 1, "", "", str(exc)
            if failure is not None:
                problem = restore(module, before, lock_timeout)
                result.update(stdout=out, stderr=err, restored=problem is None, restore_error=problem or "")
                module.fail_json(msg=failure, **result)
            result.update(stdout=out)

    after = Snapshot(module) if transaction and not module.check_mode else before
    # the holds: the planned packages, and every hold released above whose package is still installed
    selections = {}
    for name in wanted_names:
        if after.installed(name) or module.check_mode:
            target = "hold" if params["hold"] else "install"
            if after.selections.get(name) != target:
                selections[name] = target
    for name in blocking:
        if after.installed(name) and name not in wanted_names and after.selections.get(name) != "hold":
            selections[name] = "hold"
    if selections:
        result["changed"] = True
        result["selections"] = selections
        if not module.check_mode:
            set_selections(module, dict((n, s) for n, s in selections.items() if after.selections.get(n) is not None))

    # the record: what dlsetup installed (now or before) and still is installed; what the plan asked for
    new_record = {
        "installed": sorted(
            n for n in set(record["installed"]) | (set(after.versions) - set(before.versions)) if after.installed(n)
        ),
        "requested": sorted(set(wanted_names) | set(kept)),
    }
    if new_record != record or not os.path.exists(params["record"]):
        result["changed"] = True
        if not module.check_mode:
            write_record(params["record"], new_record)
    result["record"] = new_record
    module.exit_json(**result)


if __name__ == "__main__":
    main()
