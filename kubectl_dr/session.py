"""One invocation of kubectl dr: what every job needs, made once by the CLI and handed to the job.

A job takes a `Session` instead of a kube client, a console, a run identity and loose flags: the CLI
resolves the global options once (`kubectl_dr.cli.context.session`), and a test or a library caller builds
its own with its own console. The kube client is made on first use, so a job that fails its local checks
(a bad --from, an unreadable repository) never connects.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubectl_dr.console import Console
from kubectl_dr.runs.run import Run

if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube

DRY_RUN_NONE = "none"


@dataclass
class Session:
    console: Console
    run: Run
    connect: Callable[[], Kube]
    dry_run: str = DRY_RUN_NONE  # none | client | server, as --dry-run
    namespace_flag: str | None = None  # -n as given (None: the kubeconfig context's)
    argv: Sequence[str] = ()  # the arguments after `kubectl dr`, as typed: rerun hints repeat them
    _kube: Kube | None = field(default=None, repr=False)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = self.connect()
        return self._kube

    @property
    def namespace(self) -> str:
        """-n, else the namespace of the kubeconfig context (which connects)."""
        return self.namespace_flag or self.kube.namespace

    @property
    def dry(self) -> bool:
        return self.dry_run != DRY_RUN_NONE

    def command_line(self, *, drop: Sequence[str] = (), add: Sequence[str] = (), default: Sequence[str] = ()) -> str:
        """This command as a line to paste: `kubectl dr` and the arguments as typed (``default`` when the
        session was made without them), without the flags in ``drop`` (with their values) and with ``add``
        appended. What a "run it again" hint says, so that it is the command to paste, not a description."""
        return shlex.join(["kubectl", "dr", *(redact(a) for a in without(self.argv or default, drop)), *add])


# `scheme://user:password@host`: a password typed into a URL (a restic REST server's, say) never reaches a hint,
# a terminal's scrollback or a CI log; the hint shows *** where the user puts it back, as restic prints it.
_URL_PASSWORD = re.compile(r"(://[^/@:\s]+:)[^/@\s]+@")


def redact(arg: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", arg)


def without(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``argv`` less every flag of ``flags`` ("--from", "-n") with its value, in each of pflag's spellings
    (`--flag value`, `--flag=value`, `-nshop`; a flag that takes no value alone). After `--` nothing is a flag."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            kept.extend(argv[i:])
            break
        name, inline, _ = arg.partition("=")
        if name in flags:
            takes_value = not inline and name not in _NO_VALUE
            if name == "--dry-run" and (i + 1 == len(argv) or argv[i + 1] not in _DRY_RUN_MODES):
                takes_value = False  # a bare --dry-run, as the parser reads it
            i += 2 if takes_value else 1
            continue
        if not arg.startswith("--") and len(arg) > 2 and arg[:2] in flags:  # -nshop, -ojson
            i += 1
            continue
        kept.append(arg)
        i += 1
    return kept


# Flags that take no value: dropping one must not drop the next word.
_NO_VALUE = frozenset({"--yes", "-y", "--traceback", "--quiesce", "--clean", "--allow-empty", "--overwrite",
                       "--skip-unreadable", "--from-other-cluster", "--with-encryption-config", "--read-only"})
_DRY_RUN_MODES = ("none", "client", "server")
