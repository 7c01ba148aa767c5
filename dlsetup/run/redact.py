"""The one redaction step for everything dlsetup writes to disk.

A value is secret when its key says so (:func:`is_secret_key`: ``*pass*``, ``*password*``, ``*secret*``,
``*token*``, ``vault*``, ``*_key`` that is not a path, ...), when it is vaulted (``$ANSIBLE_VAULT;...``, or the
``{"__ansible_vault": ...}`` that ``ansible-inventory --list`` makes of one), or when it is a value that was
seen under such a key anywhere (the environment, the inventory, the become password, an earlier event):
:class:`Secrets` collects those and scrubs them from any text, whatever key (or none) they appear under.

Structured data (events, the ``command`` artifact, our JSON files) is redacted by key and by value; text (logs)
by value and by ``KEY=VALUE`` / ``key: value`` shape; credentials in URLs (``https://user:TOKEN@host``) too.
:func:`redact_tree` applies it to a whole folder and makes it private (folders 0700, files 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

# password, passwd, passphrase, secret, token, credential, vault, auth ...; "pass" as a word of its own
# (ansible_become_pass, ansible_ssh_pass, PASS) but not "passed" (the verify report's counts)
_SECRET_WORD = re.compile(
    r"password|passwd|passphrase|secret|token|credential|vault|(?:^|[_.-])pass(?:$|[_.-])|(?:^|[_.-])auth(?:$|[_.-])",
    re.IGNORECASE,
)
# "*_key", "key", "api_key", "private_key...": secret unless the value is a path (a key file's name)
_KEY_WORD = re.compile(r"(?:^|[_.-])key$|(?:^|[_.-])(?:api|access)_?key|private_?key", re.IGNORECASE)
# keys of ours that look like a secret and are not: a repository key's fingerprint is public
PUBLIC_KEYS = frozenset({"dlsetup_nvidia_repo_key"})
_VAULT_HEADER = "$ANSIBLE_VAULT;"
# a vaulted value in text: the header line and the hex lines under it
_VAULT_TEXT = re.compile(r"\$ANSIBLE_VAULT;[^\n]*(?:\n[ \t]*[0-9a-fA-F]+)*")
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']+:)([^@\s/\"']+)@")
# KEY=VALUE, key: value, "key": "value" (text only); the key is checked with is_secret_key
_TEXT_PAIR = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)(?P<sep>["']?[ \t]*[:=][ \t]*["']?)(?P<value>[^\s"',}\]]+)""")
# values too plain to scrub from text wherever they appear
_PLAIN = frozenset({"true", "false", "yes", "no", "none", "null", REDACTED.lower()})
_MIN_SCRUB_LEN = 4


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) and not any(c.isspace() for c in value)


def is_secret_key(key: str) -> bool:
    """Whether a variable, option or environment variable named ``key`` holds a secret by its name."""
    return key not in PUBLIC_KEYS and bool(_SECRET_WORD.search(key) or _KEY_WORD.search(key))


def is_secret(key: str, value: Any) -> bool:
    """Whether ``value`` under ``key`` is a secret: a secret-shaped key (a ``*_key`` only when the value is not a
    path), or a vaulted value whatever its key."""
    if is_vaulted(value):
        return True
    if not is_secret_key(key) or value is None or isinstance(value, bool):
        return False
    if isinstance(value, str) and not value:
        return False
    # a key's file is not the key itself
    return bool(_SECRET_WORD.search(key)) or not (isinstance(value, str) and _looks_like_path(value))


def is_vaulted(value: Any) -> bool:
    if isinstance(value, str):
        return value.lstrip().startswith(_VAULT_HEADER)
    return isinstance(value, Mapping) and "__ansible_vault" in value


class Secrets:
    """The secret values known to this run, to be scrubbed from everything written."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    @classmethod
    def collect(cls, env: Mapping[str, str] | None = None, *trees: Any, values: Iterable[str | None] = ()) -> Secrets:
        """The secrets of an environment (by variable name), of data trees (inventory variables, extra vars: by
        key) and ``values`` given as such (a become password)."""
        secrets = cls(v for v in values if v)
        for name, value in (env or {}).items():
            if is_secret(name, value):
                secrets.add(value)
        for tree in trees:
            secrets.learn(tree)
        return secrets

    def add(self, value: str) -> None:
        text = value.strip()
        if len(text) < _MIN_SCRUB_LEN or text.lower() in _PLAIN or text in self._values:
            return
        self._values.add(text)
        escaped = json.dumps(text)[1:-1]  # the same value inside a JSON string
        if escaped != text:
            self._values.add(escaped)
        self._pattern = None

    def learn(self, tree: Any) -> None:
        """Add every value found under a secret key (or vaulted) in ``tree``."""
        if isinstance(tree, Mapping):
            for key, value in tree.items():
                if is_secret(str(key), value):
                    self._add_all(value)
                else:
                    self.learn(value)
        elif isinstance(tree, list | tuple):
            for item in tree:
                self.learn(item)
        elif is_vaulted(tree):
            self._add_all(tree)

    def _add_all(self, value: Any) -> None:
        if isinstance(value, str):
            self.add(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                self._add_all(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self._add_all(item)
        elif value is not None and not isinstance(value, bool):
            self.add(str(value))

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value, vaulted block and URL credential replaced."""
        if self._values:
            if self._pattern is None:
                # longest first, so a value containing another is replaced whole
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))
            text = self._pattern.sub(REDACTED, text)
        text = _VAULT_TEXT.sub(REDACTED, text)
        return _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", text)

    def scrub_text(self, text: str) -> str:
        """:meth:`scrub`, and the values of ``KEY=VALUE`` / ``key: value`` pairs whose key is secret-shaped (for
        logs, where a secret printed with its name may not be known yet)."""

        def pair(match: re.Match[str]) -> str:
            key, value = match["key"], match["value"]
            if value == REDACTED or not is_secret(key, value):
                return match[0]
            return f"{key}{match['sep']}{REDACTED}"

        return _TEXT_PAIR.sub(pair, self.scrub(text))

    def redact(self, data: Any) -> Any:
        """A copy of ``data`` (JSON-shaped) with secret keys' values and known secret values redacted; ``data`` is
        left as it was."""
        if isinstance(data, Mapping):
            if "__ansible_vault" in data:
                return REDACTED
            return {k: REDACTED if is_secret(str(k), v) else self.redact(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.redact(item) for item in data]
        if isinstance(data, str):
            return REDACTED if is_vaulted(data) else self.scrub(data)
        return data


def redact_event(event: dict[str, Any], secrets: Secrets) -> None:
    """Redact an ansible-runner event in place (ansible-runner writes what the event handler leaves), after
    learning the secrets it carries; its ``stdout`` text is scrubbed as a log is."""
    secrets.learn(event)
    redacted = secrets.redact(event)
    if isinstance(redacted.get("stdout"), str):
        redacted["stdout"] = secrets.scrub_text(redacted["stdout"])
    event.clear()
    event.update(redacted)


def write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write ``text`` to ``path``, readable by the owner only from the first byte (not chmod'ed afterwards)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def redact_file(path: Path, secrets: Secrets) -> None:
    """Rewrite one file redacted (JSON by structure, anything else as text); unchanged files are left alone."""
    try:
        raw = path.read_bytes()
    except OSError:
        return
    text = raw.decode("utf-8", errors="surrogateescape")
    new = text
    try:
        data = json.loads(text)
    except ValueError:
        new = secrets.scrub_text(text)
    else:
        if isinstance(data, dict | list):
            redacted = secrets.redact(data)
            if isinstance(redacted, dict) and isinstance(redacted.get("stdout"), str):  # an event's text
                redacted["stdout"] = secrets.scrub_text(redacted["stdout"])
            if redacted != data:
                new = json.dumps(redacted)
        else:
            new = secrets.scrub_text(text)
    if new != text:
        tmp = path.with_name(path.name + ".redacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(new.encode("utf-8", errors="surrogateescape"))
        os.replace(tmp, path)


def redact_tree(root: Path, secrets: Secrets, *, skip: Iterable[str] = ()) -> None:
    """Redact every regular file under ``root`` and make the tree private: folders 0700, files 0600 (an
    executable of ours 0700). Files named in ``skip`` (a lock) are only made private."""
    skipped = set(skip)
    if not root.is_dir():
        return
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(folder, name), 0o700, follow_symlinks=False)
        for name in files:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if name not in skipped:
                redact_file(path, secrets)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o700 if info.st_mode & stat.S_IXUSR else 0o600)
