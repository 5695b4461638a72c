"""The root `kubectl dr` command: global flags and the sub-commands, one module per noun.

A run builds only the noun it runs (`root_command()`): the root knows its nouns from NOUNS (name, module,
one-line help, section) and imports a noun's module, and has Typer turn its app into a Click group, when
that noun is invoked, completed or its help asked. `full_app()` registers every noun up front, as Typer
would have it: the tree the lazy one must answer exactly like (tests/unit/test_cli_lazy_tree.py).

Sub-command modules import nothing heavy at module level (the `kubernetes` package, etcd3, rich
progress): `kubectl dr --help` must answer at once.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import click
import typer

from kubectl_dr.cli import completion, help, version
from kubectl_dr.cli.globals import (
    DRY_RUN_BARE,
    DRY_RUN_BARE_WARNING,
    DRY_RUN_MODES,
    HELP,
    OUTPUT_FORMATS,
    GlobalOptions,
    parse_request_timeout,
)
from kubectl_dr.cli.lazy import LazyCommands, Noun
from kubectl_dr.errors import UsageError
from kubectl_dr.kube import trace

DESCRIPTION = """\
Disaster recovery for Kubernetes, from the terminal, with nothing installed in the cluster.

kubectl dr creates short-lived pods with your kubeconfig, does the work, verifies it end to end
(byte counts and SHA-256 on both sides), and removes what it created, also on Ctrl-C.

\b
Examples:
  # Back up a volume while the app runs, then restore it (the restore stops its owners and starts them again)
  kubectl dr pvc backup data-db-0 -n shop
  kubectl dr pvc restore data-db-0 -n shop --from latest
\b
  # Snapshot etcd from a control-plane node, and check a snapshot file offline
  kubectl dr etcd snapshot
  kubectl dr etcd verify ./snapshot.db
\b
  # Incremental backups in a restic repository (restic itself can check, list and restore them)
  kubectl dr pvc backup data-db-0 -n shop --repo restic:s3:https://s3.example/dr/shop
\b
  # Put replicas back after an interrupted run
  kubectl dr scale restore -n shop
\b
  # Snapshot etcd on the nodes every 12 hours (a plain CronJob), and pull the snapshots off-site
  kubectl dr schedule create etcd-snapshot --cron '0 */12 * * *' --keep 5
  kubectl dr etcd snapshots pull --to s3://dr-backups/prod
\b
  # Restore etcd on every control-plane node from one snapshot (plan first), then keep it or go back
  kubectl dr etcd restore --from latest --dry-run=client
  kubectl dr etcd restore --from latest
  kubectl dr etcd restore finalize     # or: kubectl dr etcd restore rollback
\b
  # Rook-Ceph mons lost quorum: see them, then rebuild the quorum from the one healthy mon
  kubectl dr rook status
  kubectl dr rook mon restore-quorum b --dry-run=client
"""

_GLOBAL = "Global flags"


def root(
    ctx: typer.Context,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help=HELP["kubeconfig"], rich_help_panel=_GLOBAL)
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help=HELP["context"], rich_help_panel=_GLOBAL)] = None,
    namespace: Annotated[
        str | None, typer.Option("-n", "--namespace", help=HELP["namespace"], rich_help_panel=_GLOBAL)
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help=HELP["cluster"], rich_help_panel=_GLOBAL)] = None,
    user: Annotated[str | None, typer.Option("--user", help=HELP["user"], rich_help_panel=_GLOBAL)] = None,
    request_timeout: Annotated[
        str, typer.Option("--request-timeout", help=HELP["request_timeout"], rich_help_panel=_GLOBAL)
    ] = "0",
    output: Annotated[str, typer.Option("-o", "--output", help=HELP["output"], rich_help_panel=_GLOBAL)] = "table",
    dry_run: Annotated[str, typer.Option("--dry-run", help=HELP["dry_run"], rich_help_panel=_GLOBAL)] = "none",
    yes: Annotated[bool, typer.Option("--yes", "-y", help=HELP["yes"], rich_help_panel=_GLOBAL)] = False,
    verbosity: Annotated[int, typer.Option("-v", "--v", help=HELP["verbosity"], rich_help_panel=_GLOBAL)] = 0,
    traceback: Annotated[bool, typer.Option("--traceback", help=HELP["traceback"], rich_help_panel=_GLOBAL)] = False,
) -> None:
    if output not in OUTPUT_FORMATS:
        raise UsageError(f'unable to match a printer suitable for the output format "{output}", '
                         f"allowed formats are: {','.join(OUTPUT_FORMATS)}")
    bare_dry_run = dry_run == DRY_RUN_BARE
    if bare_dry_run:
        dry_run = "client"
    if dry_run not in DRY_RUN_MODES:
        raise UsageError(f'Invalid dry-run value ({dry_run}). Must be "none", "server", or "client".')
    given = ctx.obj.argv if isinstance(ctx.obj, GlobalOptions) else ()
    ctx.obj = GlobalOptions(
        argv=given,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        cluster=cluster,
        user=user,
        request_timeout=parse_request_timeout(request_timeout),
        output=output,
        dry_run=dry_run,
        yes=yes,
        verbosity=verbosity,
        traceback=traceback,
    )
    console = ctx.obj.session().console
    if bare_dry_run:
        console.warn(DRY_RUN_BARE_WARNING)
    # kubectl's -v: 6 logs every API request, 8 also the scripts our pods run, through the console to stderr.
    trace.configure(verbosity, console.say if verbosity > 0 else None)


# In the order of `kubectl dr --help`: sections appear as their first command does.
NOUNS = (
    Noun("pvc", "kubectl_dr.cli.pvc", "app", "List, back up, restore, compare and rescue volumes", help.VOLUMES),
    Noun("scale", "kubectl_dr.cli.scale", "app", "Scale a claim's workloads down, and put replicas back",
         help.VOLUMES),
    Noun("namespace", "kubectl_dr.cli.namespace", "app", "Back up and restore an app: objects and volumes (alias ns)",
         help.APPS),
    Noun("ns", "kubectl_dr.cli.namespace", "app", "Alias of namespace", help.APPS, hidden=True),
    Noun("etcd", "kubectl_dr.cli.etcd", "app", "Snapshot, verify, restore and inspect etcd", help.ETCD),
    Noun("control-plane", "kubectl_dr.cli.controlplane", "app", "Back up and restore a control-plane node's files",
         help.ETCD),
    Noun("rook", "kubectl_dr.cli.rook", "app", "Rook-Ceph mons: status, and quorum restored from one mon", help.ROOK),
    Noun("backups", "kubectl_dr.cli.backups", "app", "List, verify, copy, delete and prune backups", help.REPOSITORY),
    Noun("schedule", "kubectl_dr.cli.schedule", "app", "Snapshot etcd on a schedule; cron entries for the rest",
         help.SCHEDULES),
)


def options(ctx: typer.Context) -> None:
    """Print the list of flags inherited by all commands (kubeconfig, context, namespace, output, dry run…).

    \b
    Examples:
      kubectl dr options
    """
    typer.echo(help.global_options(ctx))


def _typer(**info: Any) -> typer.Typer:
    """A Typer app with the root's settings. A noun built on its own is built under such a parent: Typer
    passes the root's markup mode, exception and suggestion settings down to every sub-app."""
    return typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False, **info)


def _root_app() -> typer.Typer:
    """The root with its global flags and its own small commands, no noun yet."""
    app = _typer(name="kubectl dr", cls=help.RootGroup, help=DESCRIPTION, no_args_is_help=True,
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    app.callback()(root)
    app.command("completion", rich_help_panel=help.OTHER,
                short_help="Print a shell completion script")(completion.completion)
    app.command("version", rich_help_panel=help.OTHER,
                short_help="Print the plugin, client and server versions")(version.version)
    app.command("options", rich_help_panel=help.OTHER,
                short_help="Print the global options every command takes")(options)
    return app


def _add(parent: typer.Typer, noun: Noun) -> None:
    sub = getattr(importlib.import_module(noun.module), noun.attribute)
    if not isinstance(sub, typer.Typer):
        raise TypeError(f"{noun.module}.{noun.attribute} is not a Typer app")
    parent.add_typer(sub, name=noun.name, rich_help_panel=noun.section, hidden=noun.hidden,
                     short_help=noun.short_help)


def _noun_command(noun: Noun) -> click.Command:
    """One noun's group, exactly as Typer builds it inside the whole tree."""
    parent = _typer()
    _add(parent, noun)
    # Every help below the root ends, as kubectl's do, by naming `kubectl dr options`.
    help.adopt(parent)
    return typer.main.get_group(parent).commands[noun.name]


def root_command() -> click.Group:
    """The root of this run's tree: global flags and small commands built, the nouns built on first use."""
    app = _root_app()
    help.adopt(app)
    root = typer.main.get_group(app)
    root.commands = LazyCommands(root.commands, NOUNS, _noun_command)
    return root


def full_app() -> typer.Typer:
    """The whole tree as one Typer app, every noun imported and registered up front (what a run built before
    NOUNS): the reference the lazy tree is compared against, and a walk over every command."""
    app = _root_app()
    for noun in NOUNS:
        _add(app, noun)
    help.adopt(app)
    return app
