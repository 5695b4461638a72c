"""`kubectl_complete-dr`: kubectl's plugin completion protocol, answered from the real command tree.

kubectl ≥ 1.26 completes `kubectl dr <TAB>` by running `kubectl_complete-dr ARGS… PARTIAL` and reading
Cobra's format: one candidate per line (`value<TAB>description`), then `:DIRECTIVE`. Commands and flags come
from the same Click tree that parses real invocations; the values of the flags and arguments that name
something in the cluster or the repository (claims, namespaces, nodes, contexts, backup IDs, schedules) are
looked up, the cluster with a short timeout: a dead API server must not freeze the shell.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem, ShellComplete

from kubectl_dr import units
from kubectl_dr.cli.globals import DRY_RUN_MODES, GLOBAL_FLAGS, OUTPUT_FORMATS, hoist
from kubectl_dr.cli.lazy import LazyCommands

if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube

# Cobra's ShellCompDirective values.
DIRECTIVE_DEFAULT = 0  # the shell may fall back to file names
DIRECTIVE_NO_FILE = 4
API_TIMEOUT = 2.0  # seconds for each lookup in the cluster while someone waits at <TAB>

# The Click parameter (by its flag or its argument's name) → what its values are.
Source = Callable[[dict[str, Any], click.Context], list[tuple[str, str]]]


def candidates(args: list[str], tree: click.Command | None = None) -> tuple[list[tuple[str, str]], int]:
    """Completions for `kubectl dr ARGS…` where the last element is the word being completed; `tree` replaces
    the command tree (a test compares the lazy one with the whole tree built up front)."""
    from kubectl_dr.cli.app import root_command

    *done, incomplete = args or [""]
    flag, value = _global_flag_value(done, incomplete)
    if flag is not None:
        found = _global_values(flag, _globals_of(done))
        return [(c, d) for c, d in found if c.startswith(value)], DIRECTIVE_NO_FILE
    command = root_command() if tree is None else tree
    attach_sources(command)
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


# --- global flags -------------------------------------------------------------------------------------
def _global_flag_value(done: list[str], incomplete: str) -> tuple[str | None, str]:
    """The global flag whose value is being typed (`-n <TAB>`, `--namespace=sh<TAB>`), and the value so far.

    Global flags stand anywhere (they are hoisted before parsing), so Click would take the flag's value for
    the next word: a flag waiting for its value is answered here, with that flag's values."""
    if done and GLOBAL_FLAGS.get(done[-1]) and (len(done) < 2 or not GLOBAL_FLAGS.get(done[-2])):
        return done[-1], incomplete
    if incomplete.startswith("--") and "=" in incomplete:
        name, _, value = incomplete.partition("=")
        if GLOBAL_FLAGS.get(name):
            return name, value
    return None, incomplete


def _globals_of(done: list[str]) -> dict[str, Any]:
    """kubeconfig, context, cluster, user and namespace as given so far (a lookup honours them)."""
    names = {"--kubeconfig": "kubeconfig", "--context": "context", "--cluster": "cluster", "--user": "user",
             "-n": "namespace", "--namespace": "namespace"}
    found: dict[str, Any] = {}
    for i, arg in enumerate(done):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                found[names[name]] = value
            elif i + 1 < len(done):
                found[names[name]] = done[i + 1]
        elif arg[:2] == "-n" and len(arg) > 2:
            found["namespace"] = arg[2:]
    return found


def _global_values(flag: str, given: dict[str, Any]) -> list[tuple[str, str]]:
    if flag in ("-o", "--output"):
        return [(f, "") for f in OUTPUT_FORMATS]
    if flag == "--dry-run":
        return [(m, "") for m in DRY_RUN_MODES]
    if flag in ("-n", "--namespace"):
        return _quietly(lambda: _names(_kube(given), "/api/v1/namespaces"))
    if flag in ("--context", "--cluster", "--user"):
        section = {"--context": "contexts", "--cluster": "clusters", "--user": "users"}[flag]
        return _quietly(lambda: _kubeconfig_names(given, section))
    return []


# --- the command tree's own parameters ----------------------------------------------------------------
def attach_sources(command: click.Command, noun: str = "") -> None:
    """Give every parameter that names something its lookup (Click asks it through `shell_complete`)."""
    for param in command.params:
        source = _source_for(command, param, noun)
        if source is not None:
            param._custom_shell_complete = _completer(source)  # Click's own hook for a parameter's values
    if not isinstance(command, click.Group):
        return
    commands = command.commands
    if isinstance(commands, LazyCommands):
        # The root's nouns are built when the words typed reach one: its lookups are attached then.
        commands.when_built(lambda name, sub: attach_sources(sub, noun or name))
        subs = commands.built()
    else:
        subs = dict(commands)
    for name, sub in subs.items():
        attach_sources(sub, noun or name)


# The backup type a command's --from takes, by its noun.
_FROM_TYPES = {"pvc": "pvc", "etcd": "etcd-snapshot", "control-plane": "control-plane"}


def _source_for(command: click.Command, param: click.Parameter, noun: str) -> Source | None:
    flags = set(getattr(param, "opts", []))
    argument = isinstance(param, click.Argument)
    if "--node" in flags:
        return _nodes
    if "--from" in flags:
        return functools.partial(_backup_ids, _FROM_TYPES.get(noun))
    if "--from-claim" in flags or (argument and getattr(param, "metavar", None) == "PVC"):
        return _claims
    if argument and noun == "backups" and param.name == "backup":
        return functools.partial(_backup_ids, None)
    if argument and noun == "schedule" and command.name == "delete":
        return _schedules
    return None


def _completer(source: Source) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        given = dict(ctx.find_root().params)
        found = _quietly(lambda: source(given, ctx))
        return [CompletionItem(v, help=d or None) for v, d in found if v.startswith(incomplete)]

    return complete


def _claims(given: dict[str, Any], ctx: click.Context | None = None) -> list[tuple[str, str]]:
    kube = _kube(given)
    namespace = given.get("namespace") or kube.namespace
    return _names(kube, f"/api/v1/namespaces/{namespace}/persistentvolumeclaims",
                  lambda item: str((item.get("status") or {}).get("phase") or ""))


def _nodes(given: dict[str, Any], ctx: click.Context | None = None) -> list[tuple[str, str]]:
    def roles(item: dict[str, Any]) -> str:
        labels = (item.get("metadata") or {}).get("labels") or {}
        found = [k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")]
        return ",".join(sorted(r for r in found if r))

    return _names(_kube(given), "/api/v1/nodes", roles)


def _schedules(given: dict[str, Any], ctx: click.Context | None = None) -> list[tuple[str, str]]:
    from kubectl_dr.etcd.topology import ETCD_NAMESPACE
    from kubectl_dr.schedules import manage

    found = manage.list_schedules(_kube(given), given.get("namespace") or ETCD_NAMESPACE)
    return [(s.name, f"{s.what} {s.cron}") for s in found]


def _backup_ids(kind: str | None, given: dict[str, Any], ctx: click.Context) -> list[tuple[str, str]]:
    """The IDs in the command's repository (--repo, else the default), newest first; `latest` for --from."""
    from kubectl_dr.repo import open_repository

    repo = open_repository(ctx.params.get("repo"), os.environ, s3_endpoint=ctx.params.get("s3_endpoint"),
                           azure_endpoint=ctx.params.get("azure_endpoint"))
    now = datetime.now(timezone.utc)
    found = [(b.id, f"{b.manifest.type}, {units.size(b.manifest.size)}, "
                    f"{units.age((now - b.manifest.created_at).total_seconds())} old") for b in repo.backups(kind)]
    return ([("latest", "the newest backup")] if kind else []) + found


# --- lookups --------------------------------------------------------------------------------------------
def _quietly(lookup: Callable[[], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """A failed lookup (no kubeconfig, a dead server, no repository) completes nothing, as kubectl does;
    why goes to stderr, where Cobra's scripts keep their debug output."""
    from kubectl_dr.errors import DrError

    try:
        return lookup()
    except (DrError, OSError, ValueError) as exc:
        print(f"kubectl dr completion: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return []


def _kube(given: dict[str, Any]) -> Kube:
    from kubectl_dr.kube import kubeconfig
    from kubectl_dr.kube.client import connect

    overrides = kubeconfig.Overrides(given.get("kubeconfig"), given.get("context"), given.get("cluster"),
                                     given.get("user"), given.get("namespace"))
    return connect(kubeconfig.resolve(overrides), API_TIMEOUT)


def _names(kube: Kube, path: str, describe: Callable[[dict[str, Any]], str] | None = None) -> list[tuple[str, str]]:
    items = (kube.get(path) or {}).get("items") or []
    return sorted((str(i["metadata"]["name"]), describe(i) if describe else "") for i in items)


def _kubeconfig_names(given: dict[str, Any], section: str) -> list[tuple[str, str]]:
    from kubectl_dr.kube import kubeconfig

    overrides = kubeconfig.Overrides(given.get("kubeconfig"), None, None, None, None)
    return sorted((name, "") for name in kubeconfig.names(overrides, section, os.environ))
