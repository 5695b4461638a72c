"""`kubectl dr completion bash|zsh|fish`: a completion script for the `kubectl-dr` executable itself.

Completion through kubectl (`kubectl dr <TAB>`) answers in `kubectl_dr.cli.complete` (kubectl's plugin
protocol); this module only prints scripts, from the root command of the invocation.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

COMPLETE_VAR = "_KUBECTL_DR_COMPLETE"  # what the scripts set: Click's name for the program kubectl-dr


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(ctx: typer.Context,
               shell: Annotated[Shell, typer.Argument(help="The shell: bash, zsh or fish.")]) -> None:
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
    from typer._completion_classes import completion_init

    # Typer's own script classes, not Click's: the program answers Typer's instructions (`complete_bash`), and
    # Click's scripts send theirs (`bash_complete`), which it refuses ("Shell complete not supported").
    completion_init()
    cls = get_completion_class(shell.value)
    if cls is None:  # pragma: no cover - Click ships all three
        raise typer.BadParameter(f"unsupported shell {shell.value}")
    # The root command of this very invocation: no import of the app that registers this command.
    script = cls(ctx.find_root().command, {}, "kubectl-dr", COMPLETE_VAR).source()
    typer.echo(script, nl=False)
