"""One exception hierarchy; the CLI turns each into one line and its exit code.

Exit codes (documented in the README and `dlsetup --help`):
  0 success, 1 unexpected internal error, 2 bad input (config/inventory/expectations/arguments),
  3 host unreachable, 4 no supported stack for this hardware/OS, 5 Ansible run failed,
  6 verification failed, 7 reboot required before continuing (run the same command again after it),
  128 + N stopped by signal N: 130 Ctrl-C (SIGINT), 143 SIGTERM (run the same command again to converge).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_UNSUPPORTED = 4
EXIT_RUN_FAILED = 5
EXIT_VERIFY_FAILED = 6
EXIT_REBOOT_REQUIRED = 7
EXIT_INTERRUPTED = 130  # 128 + SIGINT; a run stopped by signal N exits 128 + N


class DlsetupError(Exception):
    """Base error: a one-line message for the user and the process exit code."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(DlsetupError):
    """Bad input: arguments, inventory, expectations or pins."""

    exit_code = EXIT_CONFIG


class UnreachableError(DlsetupError):
    """A host could not be reached over SSH (or the local connection failed)."""

    exit_code = EXIT_UNREACHABLE


class UnsupportedError(DlsetupError):
    """No supported stack exists for this hardware/OS combination."""

    exit_code = EXIT_UNSUPPORTED

    def __init__(self, message: str, *, kind: str = "unsupported", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


class RunFailedError(DlsetupError):
    """An Ansible run finished with failed tasks."""

    exit_code = EXIT_RUN_FAILED


class VerifyFailedError(DlsetupError):
    """Verification found at least one failing check."""

    exit_code = EXIT_VERIFY_FAILED


class RebootRequiredError(DlsetupError):
    """The machine running dlsetup must reboot before the run can continue."""

    exit_code = EXIT_REBOOT_REQUIRED


class InterruptedRunError(DlsetupError):
    """A signal (Ctrl-C's SIGINT, or SIGTERM) stopped an Ansible run; the exit code is 128 + the signal number."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signum: int, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = 128 + signum
