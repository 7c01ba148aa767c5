#!/usr/bin/python
# -*- coding: utf-8 -*-
# Runs on the managed host's Python (3.8+ on Ubuntu 22.04 / Debian 12): stdlib only, no newer syntax.
"""Read-only: which Debian archive components are missing from a host's apt sources."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: dlsetup_apt_sources
short_description: Find the Debian archive entries that lack some components (read-only)
description:
  - Reads C(/etc/apt/sources.list) and C(/etc/apt/sources.list.d/*.list|*.sources) (one-line and deb822 formats)
    and returns, for every enabled C(deb) entry of the given suites, the components from O(components) that no
    source enables yet, grouped into deb822 stanzas that reuse the host's own URIs and Signed-By values.
  - The file named by O(exclude) (dlsetup's own addition) is ignored, so the answer is the same on every run.
  - Never writes anything.
options:
  suites:
    description: Suites to complete, e.g. V(bookworm), V(bookworm-updates), V(bookworm-security).
    type: list
    elements: str
    required: true
  components:
    description: Components every entry of those suites should have.
    type: list
    elements: str
    required: true
  exclude:
    description: Path of a sources file to ignore (the one the caller writes from this module's answer).
    type: str
    default: ''
  default_signed_by:
    description: Signed-By for stanzas whose original entries name no keyring.
    type: str
    default: /usr/share/keyrings/debian-archive-keyring.gpg
  root:
    description: Read the files under this directory instead of C(/) (tests).
    type: path
    default: /
author: dlsetup
"""

EXAMPLES = r"""
- name: Find missing Debian components
  dlsetup_apt_sources:
    suites: [bookworm, bookworm-updates, bookworm-security]
    components: [contrib, non-free, non-free-firmware]
    exclude: /etc/apt/sources.list.d/dlsetup-debian.sources
  register: base_reg_apt_sources
"""

RETURN = r"""
stanzas:
  description: deb822 stanzas to write, each with the missing components only.
  returned: always
  type: list
  elements: dict
  sample: [{"uris": ["http://mirror/debian"], "suites": ["bookworm", "bookworm-updates"],
            "components": ["contrib", "non-free", "non-free-firmware"],
            "signed_by": "/usr/share/keyrings/debian-archive-keyring.gpg"}]
entries:
  description: The enabled deb entries found for the suites (file, uri, suite, components, signed_by).
  returned: always
  type: list
  elements: dict
"""

import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule

ONE_LINE = re.compile(r"^\s*(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)(.*)$")


def _norm_uri(uri):
    return uri.rstrip("/")


def parse_one_line(text, path):
    """Entries of a one-line-style ``.list`` file: dicts with types, uris, suites, components, signed_by."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = ONE_LINE.match(line)
        if not match:
            continue
        kind, options, uri, suite, rest = match.groups()
        signed_by = ""
        for option in (options or "").split():
            key, _sep, value = option.partition("=")
            if key.strip().lower() == "signed-by":
                signed_by = value.strip()
        entries.append(
            {
                "file": path,
                "types": [kind],
                "uris": [uri],
                "suites": [suite],
                "components": rest.split(),
                "signed_by": signed_by,
                "enabled": True,
            }
        )
    return entries


def parse_deb822(text, path):
    """Entries (one per stanza) of a deb822 ``.sources`` file. Multi-line values keep their line breaks."""
    entries = []
    fields = {}
    key = None

    def flush():
        if fields:
            entries.append(
                {
                    "file": path,
                    "types": fields.get("types", "").split(),
                    "uris": fields.get("uris", "").split(),
                    "suites": fields.get("suites", "").split(),
                    "components": fields.get("components", "").split(),
                    "signed_by": fields.get("signed-by", "").strip("\n"),
                    "enabled": fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
                }
            )

    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            flush()
            fields = {}
            key = None
            continue
        if raw[0] in " \t" and key is not None:
            fields[key] = fields[key] + "\n" + raw
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        fields[key] = value.strip()
    flush()
    return entries


def read_entries(root, exclude):
    """All entries of the host's apt sources, in apt's reading order, minus the excluded file."""
    etc = os.path.join(root, "etc/apt")
    files = [os.path.join(etc, "sources.list")]
    parts = os.path.join(etc, "sources.list.d")
    files += sorted(glob.glob(os.path.join(parts, "*.list")) + glob.glob(os.path.join(parts, "*.sources")))
    excluded = os.path.join(root, exclude.lstrip("/")) if exclude else None
    entries = []
    for path in files:
        if not os.path.isfile(path) or (excluded and os.path.abspath(path) == os.path.abspath(excluded)):
            continue
        with open(path) as handle:
            text = handle.read()
        shown = "/" + os.path.relpath(path, root)
        parser = parse_deb822 if path.endswith(".sources") else parse_one_line
        entries.extend(parser(text, shown))
    return entries


def missing_stanzas(entries, suites, components, default_signed_by):
    """Group the (uri, suite) pairs of ``suites`` that lack some of ``components`` into stanzas.

    A component counts as present when any enabled ``deb`` entry for the same URI and suite has it.
    Signed-By is copied from the host's own entry: apt refuses two different Signed-By values for one
    URI and suite.
    """
    present = {}
    signed = {}
    order = []
    for entry in entries:
        if not entry["enabled"] or "deb" not in entry["types"]:
            continue
        for uri in entry["uris"]:
            if uri.startswith("cdrom:"):
                continue  # an installation medium is no mirror to copy
            for suite in entry["suites"]:
                if suite not in suites:
                    continue
                pair = (_norm_uri(uri), suite)
                if pair not in present:
                    present[pair] = set()
                    order.append((uri, suite))
                present[pair].update(entry["components"])
                if entry["signed_by"] and not signed.get(pair):
                    signed[pair] = entry["signed_by"]
    stanzas = []
    index = {}
    for uri, suite in order:
        pair = (_norm_uri(uri), suite)
        missing = [c for c in components if c not in present[pair]]
        if not missing:
            continue
        key = (pair[0], signed.get(pair) or default_signed_by, tuple(missing))
        if key not in index:
            index[key] = len(stanzas)
            stanzas.append({"uris": [uri], "suites": [], "components": missing, "signed_by": key[1]})
        stanzas[index[key]]["suites"].append(suite)
    return stanzas


def main():
    module = AnsibleModule(
        argument_spec=dict(
            suites=dict(type="list", elements="str", required=True),
            components=dict(type="list", elements="str", required=True),
            exclude=dict(type="str", default=""),
            default_signed_by=dict(type="str", default="/usr/share/keyrings/debian-archive-keyring.gpg"),
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        entries = read_entries(params["root"], params["exclude"])
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="cannot read the apt sources: %s" % exc)
    relevant = [
        e for e in entries if e["enabled"] and "deb" in e["types"] and any(s in params["suites"] for s in e["suites"])
    ]
    module.exit_json(
        changed=False,
        stanzas=missing_stanzas(entries, params["suites"], params["components"], params["default_signed_by"]),
        entries=relevant,
    )


if __name__ == "__main__":
    main()
