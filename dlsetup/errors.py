"""One exception hierarchy; each error carries its exit code, and the CLI turns it into one line and that code.

Exit codes (documented in the README and `dlsetup --help`):
  0 success, 1 unexpected internal error, 2 bad input (config/inventory/expectations/arguments),
  3 host unreachable, 4 no supported stack for this hardware/OS, 5 Ansible run failed,
  6 verification failed (a check failed, or nothing could be checked: verdict NOTHING CHECKED),
  7 reboot required before continuing (run the same command again after it),
  8 preflight: a source the plan needs cannot be reached or trusted from the host (nothing was changed),
  9 drift (``dlsetup diff``): the hardware or the plan changed since the last verified baseline,
  10 a host was reached but dlsetup's facts module failed there (the module's first error line says why, e.g. no
     Python interpreter at the configured path),
  128 + N stopped by signal N: 130 Ctrl-C (SIGINT), 143 SIGTERM (run the same command again to converge).
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_UNSUPPORTED = 4
EXIT_RUN_FAILED = 5
EXIT_VERIFY_FAILED = 6
EXIT_REBOOT_REQUIRED = 7
EXIT_PREFLIGHT = 8
EXIT_DRIFT = 9
EXIT_HOST_FAILED = 10
EXIT_INTERRUPTED = 128 + signal.SIGINT  # a run stopped by signal N exits 128 + N

# the one table of exit codes: `dlsetup --help` prints it, the README's "Exit codes" table is it (a unit test
# holds the two together)
EXIT_CODES: tuple[tuple[str, str], ...] = (
    ("0", "ok"),
    ("1", "internal error (a bug: run with --debug and report it)"),
    ("2", "bad input: arguments, inventory, expectations, pins, sources, paths; refused before anything ran"),
    ("3", "a host is unreachable (SSH, its host key, the local connection)"),
    ("4", "no supported stack for this hardware or OS"),
    ("5", "the Ansible run failed on a host"),
    ("6", "verification failed (a check failed, or nothing could be checked)"),
    ("7", "a reboot is required: reboot, then run the same command again"),
    ("8", "preflight: a source the plan needs cannot be reached or trusted from a host; nothing was changed"),
    ("9", "drift (dlsetup diff): the hardware or the plan changed since the last verified baseline"),
    (
        "10",
        "a host was reached but dlsetup's facts module failed there (its first error line says why); `verify` and "
        "`diff` count such a host as unreachable (3)",
    ),
    ("130, 143", "interrupted by Ctrl-C (SIGINT) or SIGTERM: run the same command again to converge"),
)
EXIT_CODES_TEXT = "Exit codes:\n" + "\n".join(f"  {code:>8}  {meaning}" for code, meaning in EXIT_CODES)


class DlsetupError(Exception):
    """Base error: a one-line message for the user, an optional hint, a machine-readable kind and the exit code.

    How the CLI shows it: ``error: MESSAGE`` and ``hint: HINT``; a ``verdict`` (the outcome of a run or a
    verification, whose details were rendered above it) as the message alone; and an error already ``shown`` with
    the result it ends (a facts table with an unreachable host) not at all, only its exit code.
    """

    exit_code: int = EXIT_INTERNAL
    kind: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: str | None = None,
        verdict: bool = False,
        shown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.verdict = verdict
        self.shown = shown
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return self.message

    def _clone(self) -> DlsetupError:
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        return clone

    def as_shown(self) -> DlsetupError:
        """This error, marked as already rendered: the CLI only exits with its code."""
        shown = self._clone()
        shown.shown = True
        return shown

    def about_host(self, name: str, suffix: str = "") -> DlsetupError:
        """This error (same class, kind, hint and exit code), its message naming the host it is about."""
        named = self._clone()
        named.message = f"host {name}: {self.message}{suffix}"
        named.args = (named.message,)
        return named

    def payload(self) -> dict[str, dict[str, str | None]]:
        """``{"error": {"kind", "message", "hint"}}``: the one error shape of ``--format json``, for every command
        (kinds listed in docs/plan.md)."""
        return {"error": {"kind": self.kind, "message": self.message, "hint": self.hint}}


class ConfigError(DlsetupError):
    """Bad input: arguments, inventory, expectations or pins."""

    exit_code = EXIT_CONFIG
    kind = "bad_input"


class UnreachableError(DlsetupError):
    """A host could not be reached over SSH (or the local connection failed)."""

    exit_code = EXIT_UNREACHABLE
    kind = "unreachable"


class HostFailedError(DlsetupError):
    """A host answered, but dlsetup's facts module failed there (a missing interpreter, a broken Python): not
    "unreachable", and the message carries the module's own first error line."""

    exit_code = EXIT_HOST_FAILED
    kind = "host_failed"


class UnsupportedError(DlsetupError):
    """No supported stack exists for this hardware/OS combination."""

    exit_code = EXIT_UNSUPPORTED
    kind = "unsupported"


class RunFailedError(DlsetupError):
    """An Ansible run finished with failed tasks."""

    exit_code = EXIT_RUN_FAILED
    kind = "run_failed"


class VerifyFailedError(DlsetupError):
    """Verification found at least one failing check."""

    exit_code = EXIT_VERIFY_FAILED
    kind = "verify_failed"


class RebootRequiredError(DlsetupError):
    """The machine running dlsetup must reboot before the run can continue."""

    exit_code = EXIT_REBOOT_REQUIRED
    kind = "reboot_required"


class PreflightError(DlsetupError):
    """Before any host was changed: a source the plan needs (NVIDIA's repository or a mirror of it, its key, a
    wheel index, a wheelhouse) cannot be reached or trusted from the host."""

    exit_code = EXIT_PREFLIGHT
    kind = "preflight_failed"


class DriftError(DlsetupError):
    """``dlsetup diff``: a host's hardware or plan changed since its last verified baseline (like ``git diff
    --exit-code``, a finding rather than a fault)."""

    exit_code = EXIT_DRIFT
    kind = "drifted"


class InterruptedRunError(DlsetupError):
    """A signal (Ctrl-C's SIGINT, or SIGTERM) stopped dlsetup; the exit code is 128 + the signal number."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"

    def __init__(self, signum: int, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = 128 + signum
