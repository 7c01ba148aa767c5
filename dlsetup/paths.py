"""Where the shipped Ansible content lives.

In an installed wheel, playbooks/roles/inventory sit under ``dlsetup/_data``; in a source checkout (or an
editable install) they are the top-level folders of the repository. Both layouts are searched in that order.
"""

from __future__ import annotations

import locale
import os
import sys
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def data_dir() -> Path:
    """Return the folder holding ``playbooks/``, ``roles/`` and ``inventory/``."""
    for candidate in (PACKAGE_DIR / "_data", PACKAGE_DIR.parent):
        if (candidate / "roles").is_dir() and (candidate / "playbooks").is_dir():
            return candidate
    raise FileNotFoundError("dlsetup's Ansible content (playbooks/, roles/) is missing from the installation")


def playbook(name: str) -> Path:
    """Path of a shipped playbook, e.g. ``playbook("facts.yml")``."""
    return data_dir() / "playbooks" / name


def roles_dir() -> Path:
    return data_dir() / "roles"


def inventory_dir() -> Path:
    return data_dir() / "inventory"


def verify_suite_dir() -> Path:
    """The pytest-testinfra suite shipped as part of the Python package."""
    return PACKAGE_DIR / "verify" / "suite"


def ansible_env() -> dict[str, str]:
    """Environment for every Ansible process dlsetup starts (also used for testinfra)."""
    roles = roles_dir()
    bin_dir = str(Path(sys.executable).parent)
    return {
        "ANSIBLE_ROLES_PATH": str(roles),
        "ANSIBLE_LIBRARY": str(roles / "hw_facts" / "library"),
        "ANSIBLE_MODULE_UTILS": str(roles / "hw_facts" / "module_utils"),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=60s",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_INTERPRETER_PYTHON": "auto_silent",
        "ANSIBLE_TIMEOUT": "20",
        # ansible-playbook and friends live next to dlsetup's interpreter, on PATH or not
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        **_utf8_locale(),
    }


def _utf8_locale() -> dict[str, str]:
    """``LC_ALL=C.UTF-8`` where the user's locale is not a UTF-8 one that exists (``LC_ALL=C``, a locale that is
    not installed): Ansible refuses to start in any other ("requires the locale encoding to be UTF-8"), and
    C.UTF-8 is part of glibc on every OS dlsetup supports."""
    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "")
        encoding = locale.getlocale(locale.LC_CTYPE)[1] or ""
    except locale.Error:
        encoding = ""
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)
    return {} if encoding.lower().replace("-", "") == "utf8" else {"LC_ALL": "C.UTF-8"}
