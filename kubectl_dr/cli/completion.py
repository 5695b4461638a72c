"""Shell completion: kubectl's plugin protocol and stand-alone scripts.

kubectl ≥ 1.26 completes `kubectl dr <TAB>` by running `kubectl_complete-dr ARGS… PARTIAL` and reading
Cobra's format: one candidate per line (`value<TAB>description`), then `:DIRECTIVE`. We answer from the
same Click command tree that parses real invocations, so completion never drifts from the CLI.
`kubectl dr completion bash|zsh|fish` prints a script for the `kubectl-dr` executable itself.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

# Cobra's ShellCompDirective values.
DIRECTIVE_DEFAULT = 0  # the shell may fall back to file names
DIRECTIVE_NO_FILE = 4


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def candidates(args: list[str]) -> tuple[list[tuple[str, str]], int]:
    """Completions for `kubectl dr ARGS…` where the last element is the word being completed."""
    import click
    from click.shell_completion import ShellComplete

    from kubectl_dr.cli.app import app
    from kubectl_dr.cli.globals import hoist

    command = typer.main.get_command(app)
    *done, incomplete = args or [""]
    completer = ShellComplete(command, {}, "kubectl dr", "_KUBECTL_DR_COMPLETE")
    try:
        items = completer.get_completions(hoist(done), incomplete)
    except (click.ClickException, click.exceptions.Exit):
        return [], DIRECTIVE_NO_FILE
    found = [(str(item.value), (item.help or "").splitlines()[0] if item.help else "") for item in items]
    files = any(item.type in ("file", "dir") for item in items)
    return found, DIRECTIVE_DEFAULT if files else DIRECTIVE_NO_FILE


def complete_main() -> None:
    """Entry point of `kubectl_complete-dr`."""
    args = sys.argv[1:]
    # Cobra scripts call `PROG __complete ARGS…`; accept that spelling too.
    if args[:1] == ["__complete"]:
        args = args[1:]
    found, directive = candidates(args)
    for value, description in found:
        print(f"{value}\t{description}" if description else value)
    print(f":{directive}")
    print(f"Completion ended with directive: {directive}", file=sys.stderr)


def completion(shell: Annotated[Shell, typer.Argument(help="The shell: bash, zsh or fish.")]) -> None:
    """Print a completion script for the kubectl-dr executable.

    Completion through kubectl (`kubectl dr <TAB>`) needs no script: kubectl ≥ 1.26 runs the
    `kubectl_complete-dr` executable installed next to kubectl-dr.

    \b
    Examples:
      # bash, current shell
      source <(kubectl dr completion bash)
      # zsh, permanently
      kubectl dr completion zsh > "${fpath[1]}/_kubectl-dr"
      # fish
      kubectl dr completion fish > ~/.config/fish/completions/kubectl-dr.fish
    """
    from click.shell_completion import get_completion_class

    from kubectl_dr.cli.app import app

    cls = get_completion_class(shell.value)
    if cls is None:  # pragma: no cover - Click ships all three
        raise typer.BadParameter(f"unsupported shell {shell.value}")
    script = cls(typer.main.get_command(app), {}, "kubectl-dr", "_KUBECTL_DR_COMPLETE").source()
    sys.stdout.write(script)
