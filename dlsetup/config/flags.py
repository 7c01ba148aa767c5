"""``KEY=VALUE`` command-line flags (``--expect``, ``--pin``), parsed one way for every option that takes them."""

from __future__ import annotations

from collections.abc import Sequence

from dlsetup.errors import ConfigError


def parse_key_values(flags: Sequence[str], *, option: str, example: str) -> dict[str, str]:
    """``["gpu_count=2"]`` → ``{"gpu_count": "2"}`` (keys and values stripped).

    A flag without ``=`` or without a key, and a key given twice with different values, is a
    :class:`~dlsetup.errors.ConfigError` naming ``option`` and showing ``example`` (the same value twice is fine).
    """
    values: dict[str, str] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{option} {flag!r}: expected KEY=VALUE, e.g. {option} {example}")
        value = value.strip()
        if key in values and values[key] != value:
            raise ConfigError(
                f"{option} {key} given twice with different values ({values[key]!r} and {value!r}): give it once"
            )
        values[key] = value
    return values
