"""Text for rich consoles: values shown as text, never read as markup (hardware names contain [brackets])."""

from __future__ import annotations

from rich.markup import escape


def show(value: object, suffix: str = "") -> str:
    """A value for display, escaped; ``-`` when unknown."""
    return "-" if value is None else escape(f"{value}{suffix}")
