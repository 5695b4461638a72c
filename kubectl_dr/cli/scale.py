"""`kubectl dr scale`: scale the workloads that use a claim down, and put recorded replicas back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubectl_dr.cli.context import namespace_may_exist, options, session
from kubectl_dr.cli.durations import positive_seconds
from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.errors import DrError
from kubectl_dr.ui.output import emit, render_table
from kubectl_dr.units import count

if TYPE_CHECKING:
    from kubectl_dr.kube.client import Kube

app = typer.Typer(
    help=(
        "Scale the workloads that mount a claim down (recording their replicas on the objects), and put "
        "recorded replicas back: the way to undo an interrupted restore."
    ),
    no_args_is_help=True,
)

DOWN_HELP = """\
Scale every workload that mounts the claim to 0 and wait until no pod uses it.

Each workload's replicas are recorded on it, as an annotation, in the same write that sets them to 0,
so `kubectl dr scale restore` can put them back from anywhere, also after a crash. Deployments,
StatefulSets, ReplicaSets and ReplicationControllers can be stopped; a DaemonSet, a Job, a CronJob, a
bare pod, or a workload managed by an operator or by an autoscaler that scales up from zero cannot: the
command then changes nothing and says what to do. Ctrl-C while waiting scales everything back.

\b
Examples:
  # Stop whatever uses the claim data-db-0 (asks first on a terminal)
  kubectl dr scale down data-db-0 -n shop
\b
  # Show what would be stopped, without changing anything
  kubectl dr scale down data-db-0 -n shop --dry-run=client
\b
  # In a script: no prompt, give slow pods 10 minutes to shut down
  kubectl dr scale down data-db-0 -n shop --yes --timeout 10m
"""

RESTORE_HELP = """\
Put back the replicas that kubectl dr recorded on workloads, and remove the records.

Idempotent: workloads without a record are left alone, so it is safe to run again. A workload whose
replicas someone changed after it was scaled down keeps that person's replicas; only the record goes.
A named workload that does not exist is an error (NotFound), and then nothing is changed.

\b
Examples:
  # Everything kubectl dr scaled down in the namespace shop
  kubectl dr scale restore -n shop
\b
  # Only these workloads (NAME or KIND/NAME)
  kubectl dr scale restore -n shop statefulset/db web
\b
  # Everything in every namespace, as JSON
  kubectl dr scale restore -A -o json
\b
  # Only what one run scaled down (the run id is in the kubectl-dr.io/scaled-down-by annotation)
  kubectl dr scale restore -n shop --run-id 20250101T120000Z-1a2b3c
"""


def _namespace(opts: GlobalOptions) -> str:
    return opts.namespace or opts.kube().namespace


def _refuse_other_runs(kube: Kube, namespace: str | None, names: list[str], run_id: str, where: str) -> None:
    """--run-id matched nothing while other runs' records are there: "nothing to restore" would leave those
    workloads at 0 (a second `scale down`, or a restore, takes a record over with its own run ID)."""
    from kubectl_dr.workloads.records import read_record
    from kubectl_dr.workloads.scaling import is_wanted, parse_workload, recorded_workloads

    wanted = [parse_workload(n) for n in names]
    held = []
    for obj in recorded_workloads(kube, namespace):
        kind, name = obj["kind"], obj["metadata"]["name"]
        record = read_record(obj)
        if record is not None and is_wanted(kind, name, wanted):
            held.append((f"{kind}/{name}" + ("" if namespace else f" -n {obj['metadata']['namespace']}"),
                         record.run_id))
    if held:
        runs = sorted({r for _, r in held})
        scope = "-A" if namespace is None else f"-n {namespace}"
        listed = ", ".join(f"{w} (run {r or 'unknown'})" for w, r in held)
        raise DrError(f"no workload in {where} has a record of run {run_id}; {listed} "
                      f"{'carries' if len(held) == 1 else 'carry'} the record of another run",
                      hint=f"A later run took the record over (a second scale down, or a restore). Put them back "
                           f"with `kubectl dr scale restore {scope} --run-id {runs[0]}`, or without --run-id "
                           "for every record.")


@app.command("down", help=DOWN_HELP, short_help="Scale a claim's workloads to 0, replicas recorded")
def down(
    ctx: typer.Context,
    claim: Annotated[str, typer.Argument(metavar="PVC", help="The PersistentVolumeClaim whose users to stop.")],
    timeout: Annotated[
        str, typer.Option("--timeout", metavar="DURATION",
                          help="How long to wait for the pods to stop (e.g. 90s, 5m, 1h).")
    ] = "5m",
) -> None:
    from kubectl_dr.workloads import find_consumers, scale_down
    from kubectl_dr.workloads.scaling import new_run_id, refuse_unstoppable, restore_hint

    opts, console = options(ctx), session(ctx).console
    seconds = positive_seconds(timeout)
    kube = opts.kube()
    namespace = _namespace(opts)
    consumers = find_consumers(kube, namespace, claim)
    for consumer in consumers:
        for note in consumer.notes:
            console.warn(f"{consumer.ref}: {note}")
    if not consumers:
        if opts.output == "table":
            console.say(f'no workload uses claim "{claim}" in namespace "{namespace}"; nothing to scale down')
        emit({"namespace": namespace, "claim": claim, "workloads": [], "dryRun": opts.dry_run != "none"},
             opts.output, table="")
        return
    refuse_unstoppable(consumers)

    if opts.dry_run == "client":
        rows = [[c.kind, c.name, c.replicas, len(c.pods), ",".join(c.nodes) or "-"] for c in consumers]
        plan = {"namespace": namespace, "claim": claim, "dryRun": True,
                "workloads": [c.to_dict() for c in consumers]}
        table = render_table(["KIND", "NAME", "REPLICAS", "PODS", "NODES"], rows)
        table += f"(dry run) would scale {count(len(consumers), 'workload')} to 0 replicas\n"
        emit(plan, opts.output, table=table)
        return

    server_dry_run = opts.dry_run == "server"
    if not server_dry_run:
        listing = ", ".join(f"{c.ref} ({count(c.replicas or 0, 'replica')})" for c in consumers)
        console.confirm(f'scale down {listing} in namespace "{namespace}" to stop their use of claim "{claim}"')
    record = scale_down(kube, consumers, run_id=new_run_id(), reason=f"kubectl dr scale down {claim}",
                        timeout=seconds, console=console, dry_run=server_dry_run)
    # The command's job is to leave them stopped: the undo steps must not run at exit.
    record.keep()
    data: dict[str, Any] = {**record.to_dict(), "dryRun": server_dry_run}
    rows = [[w.kind, w.name, w.original_replicas, 0] for w in record.workloads]
    table = render_table(["KIND", "NAME", "ORIGINAL", "REPLICAS"], rows) if rows else ""
    emit(data, opts.output, table=table)
    if not server_dry_run and record.workloads:
        console.say(restore_hint(namespace))


@app.command("restore", help=RESTORE_HELP, short_help="Put back the replicas kubectl dr recorded")
def restore(
    ctx: typer.Context,
    workloads: Annotated[
        list[str] | None,
        typer.Argument(metavar="[WORKLOAD]...", help="Only these workloads: NAME or KIND/NAME (deploy/web, sts/db)."),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces",
                           help="If present, restore workloads in every namespace (ignores --namespace).")
    ] = False,
    run_id: Annotated[
        str | None, typer.Option("--run-id", metavar="ID", help="Only workloads scaled down by this run.")
    ] = None,
) -> None:
    from kubectl_dr.workloads import scale_restore
    from kubectl_dr.workloads.scaling import parse_workload, require_workloads

    opts, console = options(ctx), session(ctx).console
    names = list(workloads or [])
    wanted = [parse_workload(n) for n in names]  # usage errors before any request
    kube = opts.kube()
    namespace = None if all_namespaces else _namespace(opts)
    if namespace is not None and not namespace_may_exist(kube, namespace):
        raise DrError(f'namespaces "{namespace}" not found',
                      hint="Check the namespace (-n NAMESPACE), or use -A for all namespaces.")
    require_workloads(kube, namespace, names)
    results = scale_restore(kube, namespace, names=names, run_id=run_id, console=console, dry_run=opts.dry_run)
    for kind, name in wanted:
        if not any(r.name == name and kind in (None, r.kind) for r in results):
            what = f"{kind.lower()}/{name}" if kind else name
            console.warn(f"{what}: no replicas recorded by kubectl dr{' for that run' if run_id else ''}; "
                    "nothing to restore")
    where = "any namespace" if namespace is None else f'namespace "{namespace}"'
    if not results and run_id is not None:
        _refuse_other_runs(kube, namespace, names, run_id, where)
    if not results and opts.output == "table":
        console.say(f"no workloads with replicas recorded by kubectl dr in {where}; nothing to restore")
    data = {"kind": "List", "dryRun": opts.dry_run != "none",
            "items": [r.to_dict() for r in results]}
    rows = [[r.namespace, r.kind, r.name, r.replicas, r.would if opts.dry_run != "none" else r.action]
            for r in results]
    table = render_table(["NAMESPACE", "KIND", "NAME", "REPLICAS", "RESULT"], rows) if rows else ""
    emit(data, opts.output, table=table)
