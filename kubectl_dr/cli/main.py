"""Entry point of the `kubectl-dr` executable: one place maps every failure to a message and exit code.

stdout carries results only; errors go to stderr in kubectl's words (`error: …`,
`Error from server (Reason): …`); exit codes are 0 ok, 1 error, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # not `from typing import …`: typing is one more import outside main()'s guard

# Only os and sys at the top: the rest loads inside main()'s guard. A Ctrl-C in the first half second, while
# the interpreter loads the CLI, ends like every other interrupt (one line, exit 130), not with a traceback of
# whichever import it landed in.
if TYPE_CHECKING:
    import click

    from kubectl_dr import cleanup

# errors.EXIT_INTERRUPTED, written out: the import of kubectl_dr.errors may be what the Ctrl-C interrupted.
_EXIT_INTERRUPTED = 130


def prog_name(env: dict[str, str] | None = None) -> str:
    """`kubectl dr` when kubectl started us, else `kubectl-dr`.

    kubectl replaces itself with the plugin (exec), passing its environment on; the shell that started
    kubectl set `_` to kubectl's path, which is how we can tell.
    """
    env = dict(os.environ) if env is None else env
    launcher = os.path.basename(env.get("_", ""))
    if launcher.startswith("kubectl") and not launcher.startswith("kubectl-") and not launcher.startswith("kubectl_"):
        return "kubectl dr"
    return "kubectl-dr"


def _usage_message(exc: click.UsageError) -> str:
    import click

    text = _once(exc.format_message(), " Did you mean ")
    # Say it the way pflag says it: "unknown flag: --bogus".
    if isinstance(exc, click.NoSuchOption):
        text = f"unknown flag: {exc.option_name}"
    return text


def _once(text: str, marker: str) -> str:
    """Keep the first sentence that starts with ``marker``: Typer and Click (from 8.4) each append their own
    "Did you mean …?" to an unknown command, and a suggestion is said once."""
    head, sep, tail = text.partition(marker)
    return head + sep + tail.split(marker, 1)[0] if sep else text


def _report_undo_failures(failures: list[cleanup.UndoFailure]) -> None:
    from kubectl_dr.ui.output import message

    for failure in failures:
        message(f"error: could not undo \"{failure.step.description}\": {failure.error}")
        if failure.step.fallback_hint:
            message(f"  {failure.step.fallback_hint}")


def run(argv: Sequence[str], tree: click.Command | None = None) -> int:
    """Run `kubectl dr ARGV` and return its exit code. `tree` replaces the command tree (a test compares the
    lazily built one with the whole tree built up front, through this same error handling)."""
    import traceback as tb

    import click

    from kubectl_dr import cleanup
    from kubectl_dr.cli.app import root_command
    from kubectl_dr.cli.globals import GlobalOptions, hoist
    from kubectl_dr.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DrError, Interrupted
    from kubectl_dr.ui.output import message

    command = root_command() if tree is None else tree
    if "_KUBECTL_DR_COMPLETE" in os.environ:  # completion.COMPLETE_VAR (that module loads typer)
        # A script from `kubectl dr completion SHELL` asks (`complete_bash`…): Typer's answer classes, which the
        # lazily built tree never registered, format the candidates as its scripts read them.
        from typer._completion_classes import completion_init

        from kubectl_dr.cli.complete import attach_sources

        completion_init()
        attach_sources(command)  # claims, nodes, backup IDs… looked up as for `kubectl dr <TAB>`
    name = prog_name()
    show_traceback = "--traceback" in argv or any(a in ("-v=9", "--v=9") for a in argv)
    try:
        args = hoist(list(argv))
        with cleanup.scope(message, _report_undo_failures):
            result = command.main(args=args, prog_name=name, standalone_mode=False,
                                 obj=GlobalOptions(argv=tuple(argv)))
        return int(result or 0) if isinstance(result, int) else EXIT_OK
    except click.exceptions.NoArgsIsHelpError as exc:
        # `kubectl dr` and `kubectl dr pvc` print their help, as kubectl does, and that is not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_OK
    except click.UsageError as exc:
        cmd_path = exc.ctx.command_path if exc.ctx else name
        message(f"error: {_usage_message(exc)}")
        message(f"See '{cmd_path} --help' for usage.")
        return EXIT_USAGE
    except Interrupted as exc:
        message(exc.render())
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        message("error: interrupted by SIGINT")
        return EXIT_INTERRUPTED
    except click.exceptions.Abort:
        message("error: aborted")
        return EXIT_ERROR
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except DrError as exc:
        if show_traceback:
            tb.print_exc()
        message(exc.render())
        return exc.exit_code
    except BrokenPipeError:
        # `kubectl dr backups list | head`: the reader went away; not our error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if show_traceback:
            tb.print_exc()
        message(f"error: unexpected {type(exc).__name__}: {exc}")
        message("Run again with --traceback for details, and please report it.")
        return EXIT_ERROR


def main() -> None:
    try:
        # The release archive ships one executable; linked as `kubectl_complete-dr` it answers completions.
        if os.path.basename(sys.argv[0]).startswith("kubectl_complete-"):
            from kubectl_dr.cli.complete import complete_main

            complete_main()
            return
        code = run(sys.argv[1:])
    except KeyboardInterrupt:  # before run() could catch it: while the CLI was still being loaded
        os.write(2, b"error: interrupted by SIGINT\n")
        code = _EXIT_INTERRUPTED
    sys.exit(code)
