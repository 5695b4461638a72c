"""Errors the CLI knows how to report, and the exit code each one means.

Every layer raises these (or lets the kube layer translate client exceptions into them); the single
handler in `kubectl_dr.cli.main` prints them the way kubectl prints its own errors, so a user who knows
kubectl's messages recognises ours.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DrError(Exception):
    """A failure the user can act on: printed as `error: MESSAGE` plus an optional hint."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n{self.hint}"
        return text


class UsageError(DrError):
    """The command line itself is wrong (unknown flag, bad value): exit code 2 as with any usage error."""

    exit_code = EXIT_USAGE


class ConfigError(DrError):
    """The kubeconfig cannot be used: missing file, unknown context/cluster/user."""


class ApiError(DrError):
    """The API server answered with a Status error; printed exactly as kubectl prints those."""

    def __init__(self, status: int, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.reason = reason

    def render(self) -> str:
        text = f"Error from server ({self.reason}): {self.message}" if self.reason else f"error: {self.message}"
        if self.hint:
            text += f"\n{self.hint}"
        return text


class UnauthorizedError(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "Unauthorized", "You must be logged in to the server (Unauthorized)")

    def render(self) -> str:
        return "error: You must be logged in to the server (Unauthorized)"


class ServerUnreachable(DrError):
    """The server address does not answer; kubectl's sentence, without the `error:` prefix it omits too."""

    def __init__(self, host: str) -> None:
        super().__init__(f"The connection to the server {host} was refused - did you specify the right host or port?")
        self.host = host

    def render(self) -> str:
        # kubectl's sentence alone, as kubectl prints it; a hint a command added (etcd: ask the members
        # directly when the API is down) follows on its own line.
        return self.message + (f"\n{self.hint}" if self.hint else "")


class ServerTimeout(DrError):
    """The server took the connection but did not answer within the request timeout."""

    def __init__(self, host: str) -> None:
        super().__init__(f"the server {host} did not answer in time (request timeout)",
                         hint="Raise --request-timeout, or check the API server's health.")
        self.host = host


class VerificationError(DrError):
    """Data did not check out (checksum, size, remote exit status). Nothing destructive follows one."""


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP: cleanup has run (or says what it could not do); exit code 130.

    A BaseException, like KeyboardInterrupt, and not a DrError: code that handles an error it expects
    (`except DrError`, `except Exception`: a pod's logs that cannot be read, an event list that fails)
    must never swallow the user's Ctrl-C and carry on.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.message = f"interrupted by {signal_name}"
        self.hint: str | None = None

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n{self.hint}"
        return text
