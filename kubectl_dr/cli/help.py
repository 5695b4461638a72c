"""The root help in kubectl's shape: commands first, in titled sections, each with a one-line summary.

`kubectl --help` lists "Basic Commands (Beginner):", "Deploy Commands:" … before anything else, one short
summary a command. Click lists every command under "Commands:" after the options and cuts each help text at
45 characters with "...", mid-sentence. Here every command carries its own `short_help` (a summary written
to fit, never cut), and says its section through Typer's `rich_help_panel` (Typer only reads it when it
renders with rich, which this CLI does not). Sections come in the order of SECTIONS, as a newcomer needs them.
"""

from __future__ import annotations

import click
from typer.core import TyperGroup

VOLUMES = "Volume Commands"
APPS = "Application Commands"
ETCD = "etcd and Control-Plane Commands"
REPOSITORY = "Backup Repository Commands"
SCHEDULES = "Schedule Commands"
OTHER = "Other Commands"
SECTIONS = (VOLUMES, APPS, ETCD, REPOSITORY, SCHEDULES, OTHER)
GLOBAL_FLAGS = "Global flags"


class RootGroup(TyperGroup):
    """`kubectl dr --help`: the sections of commands, then the global flags."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_commands(ctx, formatter)
        rows = [row for param in self.get_params(ctx) if (row := param.get_help_record(ctx)) is not None]
        if rows:
            with formatter.section(GLOBAL_FLAGS):
                formatter.write_dl(rows)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            panel = getattr(command, "rich_help_panel", None) or OTHER
            # A limit no summary reaches: a command without a short_help shows its first sentence whole.
            sections.setdefault(panel, []).append((name, command.get_short_help_str(limit=1000)))
        # One name column for every section, as kubectl aligns them.
        width = max((len(name) for rows in sections.values() for name, _ in rows), default=0)
        ordered = sorted(sections.items(), key=lambda item: SECTIONS.index(item[0]) if item[0] in SECTIONS
                         else len(SECTIONS))
        for title, rows in ordered:
            with formatter.section(title):
                formatter.write_dl([(name.ljust(width), text) for name, text in rows])
