"""kubectl's global flags: where they may appear, how they are validated, and what they resolve to.

kubectl accepts its global flags anywhere on the command line (`kubectl get pods -n shop`), while Click
only accepts a group's options before the sub-command. `hoist` moves them to the front so Click parses
them once, at the root, with their help text shown in `kubectl dr --help`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubectl_dr.errors import UsageError

if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube
    from kubectl_dr.kube.kubeconfig import Overrides
    from kubectl_dr.session import Session

# flag → does it take a value
GLOBAL_FLAGS: dict[str, bool] = {
    "--kubeconfig": True,
    "--context": True,
    "-n": True,
    "--namespace": True,
    "--cluster": True,
    "--user": True,
    "--request-timeout": True,
    "-o": True,
    "--output": True,
    "--dry-run": True,
    "--yes": False,
    "-y": False,
    "--traceback": False,
    "-v": True,
    "--v": True,
}

OUTPUT_FORMATS = ("table", "json", "yaml")
DRY_RUN_MODES = ("none", "client", "server")
# What pflag gives kubectl's --dry-run when it stands without a value (its NoOptDefVal); kubectl reads it as
# client and warns that the spelling is deprecated.
DRY_RUN_BARE = "unchanged"
DRY_RUN_BARE_WARNING = "--dry-run is deprecated and can be replaced with --dry-run=client."

HELP = {
    "kubeconfig": "Path to the kubeconfig file to use for CLI requests.",
    "context": "The name of the kubeconfig context to use",
    "namespace": "If present, the namespace scope for this CLI request",
    "cluster": "The name of the kubeconfig cluster to use",
    "user": "The name of the kubeconfig user to use",
    "request_timeout": (
        "The length of time to wait before giving up on a single server request. Non-zero values should "
        "contain a corresponding time unit (e.g. 1s, 2m, 3h). A value of zero means don't timeout requests."
    ),
    "output": "Output format. One of: (table, json, yaml).",
    "dry_run": (
        'Must be "none", "server", or "client". If client strategy, only print the object that would be '
        "sent, without sending it. If server strategy, submit server-side request without persisting the resource."
    ),
    "yes": "Answer yes to confirmations of destructive steps (required when there is no terminal to ask on).",
    "verbosity": "number for the log level verbosity",
    "traceback": "Print the full Python traceback of an unexpected error.",
}


def hoist(argv: list[str]) -> list[str]:
    """Move global flags (and their values) before the first sub-command, stopping at `--`."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name, has_inline = _flag_name(arg)
        if name == "--dry-run" and not has_inline and (i + 1 == len(argv) or argv[i + 1] not in DRY_RUN_MODES):
            # A bare --dry-run must not swallow the next word (`--dry-run backups list`), as in kubectl.
            front.append(f"--dry-run={DRY_RUN_BARE}")
        elif name is not None:
            takes_value = GLOBAL_FLAGS[name]
            front.append(arg)
            if takes_value and not has_inline:
                if i + 1 == len(argv):
                    # Hoisted bare, it would take the noun for its value (`pvc list -n` → "No such command").
                    import click

                    raise click.BadOptionUsage(name, f"Option '{name}' requires an argument (a global option: "
                                                     "`kubectl dr options` lists them).")
                front.append(argv[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _flag_name(arg: str) -> tuple[str | None, bool]:
    if arg.startswith("--"):
        name = arg.split("=", 1)[0]
        return (name, "=" in arg) if name in GLOBAL_FLAGS else (None, False)
    if arg.startswith("-") and len(arg) >= 2:
        short = arg[:2]
        if short in GLOBAL_FLAGS:
            # "-nshop" / "-ojson" / "-n=shop" carry their value inline, like pflag.
            return short, len(arg) > 2
    return None, False


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_request_timeout(value: str) -> float | None:
    """kubectl's rule: a bare integer is seconds, else a Go duration; 0 means no timeout."""
    text = value.strip()
    if text.isdigit():
        seconds = float(int(text))
    elif _DURATION.match(text):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text))
    else:
        raise UsageError(
            "Invalid timeout value. Timeout must be a single integer in seconds, or an integer followed by a "
            "corresponding time unit (e.g. 1s | 2m | 3h)"
        )
    return seconds or None


@dataclass
class GlobalOptions:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    cluster: str | None = None
    user: str | None = None
    request_timeout: float | None = None
    output: str = "table"
    dry_run: str = "none"
    yes: bool = False
    verbosity: int = 0
    traceback: bool = False
    argv: tuple[str, ...] = ()  # the arguments after `kubectl dr` as typed (rerun hints, the run's command)
    _kube: Kube | None = field(default=None, repr=False)
    _session: Session | None = field(default=None, repr=False)

    def overrides(self) -> Overrides:
        # Imported here: the kubeconfig loader brings YAML, which `kubectl dr --help` has no use for.
        from kubectl_dr.kube.kubeconfig import Overrides

        return Overrides(self.kubeconfig, self.context, self.cluster, self.user, self.namespace)

    def kube(self) -> Kube:
        """Connect lazily: commands that never reach the cluster never pay for importing the client."""
        if self._kube is None:
            from kubectl_dr.kube import kubeconfig
            from kubectl_dr.kube.client import connect

            self._kube = connect(kubeconfig.resolve(self.overrides()), self.request_timeout)
        return self._kube

    def session(self) -> Session:
        """The one Session of this invocation: its console, run identity and (lazy) kube client."""
        if self._session is None:
            import shlex

            from kubectl_dr.runs.run import Run
            from kubectl_dr.session import Session, redact
            from kubectl_dr.ui.console import TerminalConsole

            # The run's command is written into Leases and pod annotations in the cluster: no password in it.
            command = shlex.join(redact(a) for a in self.argv)
            self._session = Session(console=TerminalConsole(yes=self.yes), run=Run(command),
                                    connect=self.kube, dry_run=self.dry_run, namespace_flag=self.namespace,
                                    argv=self.argv)
        return self._session
