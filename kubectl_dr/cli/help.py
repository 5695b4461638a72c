"""The root help in kubectl's shape: commands first, in titled sections, each with a one-line summary.

`kubectl --help` lists "Basic Commands (Beginner):", "Deploy Commands:" … before anything else, one short
summary a command. Click lists every command under "Commands:" after the options and cuts each help text at
45 characters with "...", mid-sentence. Here every command carries its own `short_help` (a summary written
to fit, never cut), and says its section through Typer's `rich_help_panel` (Typer only reads it when it
renders with rich, which this CLI does not). Sections come in the order of SECTIONS, as a newcomer needs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import click
import typer
from click.shell_completion import CompletionItem
from typer.core import TyperCommand, TyperGroup

from kubectl_dr.cli.lazy import LazyCommands

VOLUMES = "Volume Commands"
APPS = "Application Commands"
ETCD = "etcd and Control-Plane Commands"
ROOK = "Rook-Ceph Commands"
REPOSITORY = "Backup Repository Commands"
SCHEDULES = "Schedule Commands"
OTHER = "Other Commands"
SECTIONS = (VOLUMES, APPS, ETCD, ROOK, REPOSITORY, SCHEDULES, OTHER)
GLOBAL_FLAGS = "Global flags"


class RootGroup(TyperGroup):
    """`kubectl dr --help`: the sections of commands, then the global flags."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_commands(ctx, formatter)
        rows = [row for param in self.get_params(ctx) if (row := param.get_help_record(ctx)) is not None]
        if rows:
            with formatter.section(GLOBAL_FLAGS):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # Typer's own reads every value of `commands`, which would build every noun (see lazy.py).
        return list(self.commands)

    def summary(self, ctx: click.Context, name: str, limit: int) -> tuple[str, str] | None:
        """A visible command's section and one-line help, from the nouns' table while it is not built yet;
        None for a hidden or unknown one."""
        commands = self.commands
        noun = commands.pending(name) if isinstance(commands, LazyCommands) else None
        if noun is not None:
            # What Click's get_short_help_str makes of a short_help, which every noun has.
            return None if noun.hidden else (noun.section, inspect.cleandoc(noun.short_help).strip())
        command = self.get_command(ctx, name)
        if command is None or command.hidden:
            return None
        return getattr(command, "rich_help_panel", None) or OTHER, command.get_short_help_str(limit=limit)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Click's own answer (the visible sub-commands, then the flags), without building every noun."""
        results = [CompletionItem(name, help=found[1]) for name in self.list_commands(ctx)
                   if name.startswith(incomplete) and (found := self.summary(ctx, name, 45)) is not None]
        results.extend(click.Command.shell_complete(self, ctx, incomplete))
        return results

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            # A limit no summary reaches: a command without a short_help shows its first sentence whole.
            found = self.summary(ctx, name, limit=1000)
            if found is None:
                continue
            panel, text = found
            sections.setdefault(panel, []).append((name, text))
        # One name column for every section, as kubectl aligns them.
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        ordered = sorted(sections.items(), key=lambda item: SECTIONS.index(item[0]) if item[0] in SECTIONS
                         else len(SECTIONS))
        for title, rows in ordered:
            with formatter.section(title):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows])


def options_hint(ctx: click.Context) -> str:
    """The last line of every sub-command's help, as kubectl ends its own: where the global flags are."""
    root = ctx.find_root().info_name or "kubectl dr"
    return f'Use "{root} options" for a list of global command-line options (applies to all commands).'


def _parse_args(parse: Callable[[click.Context, list[str]], list[str]], ctx: click.Context,
                args: list[str]) -> list[str]:
    try:
        return parse(ctx, args)
    except click.UsageError as exc:
        # Click raises "Option '--name' requires an argument." without a context, and the error would point at
        # the root's help instead of this command's.
        if exc.ctx is None:
            exc.ctx = ctx
        raise


class SubCommand(TyperCommand):
    """A command below the root: its help ends by saying where the global flags are listed."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return _parse_args(super().parse_args, ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write(options_hint(ctx) + "\n")


class SubGroup(TyperGroup):
    """A group below the root (`kubectl dr pvc`): its help ends like a command's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return _parse_args(super().parse_args, ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write(options_hint(ctx) + "\n")


def adopt(app: typer.Typer) -> None:
    """Make every command and group below the root app a SubCommand/SubGroup, unless it chose its own class
    (Typer records the default as TyperCommand, or as a placeholder for groups)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = SubCommand
    for group in app.registered_groups:
        if not isinstance(group.cls, type):
            group.cls = SubGroup
        if group.typer_instance is not None:
            adopt(group.typer_instance)


def global_options(ctx: click.Context) -> str:
    """`kubectl dr options`: the flags every command takes, in `kubectl options`' layout."""
    root = ctx.find_root().command
    lines = ["The following options can be passed to any command:", ""]
    for param in root.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = ", ".join(sorted(param.opts + param.secondary_opts, key=lambda o: (len(o) > 2, o)))
        default = param.default
        shown = ("false" if default is False else "true" if default is True
                 else "''" if default is None else f"{default!r}" if isinstance(default, str) else str(default))
        lines.append(f"    {names}={shown}:")
        lines.append(f"\t{' '.join((param.help or '').split())}")
        lines.append("")
    return "\n".join(lines)
