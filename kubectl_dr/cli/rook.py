"""`kubectl dr rook`: Rook-Ceph's monitors, and restoring their quorum from one healthy mon."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kubectl_dr.cli.context import options
from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.cli.repo_options import EncryptToOption, PlainRepoOption, S3EndpointOption
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table

DEFAULT_NAMESPACE = "rook-ceph"

app = typer.Typer(help="Rook-Ceph's monitors: their state as Kubernetes and Ceph see it, and restoring mon quorum "
                       "from one healthy mon.", no_args_is_help=True)
mon_app = typer.Typer(help="Act on Rook-Ceph's mons.", no_args_is_help=True)
app.add_typer(mon_app, name="mon", short_help="Restore mon quorum from one healthy mon")

OperatorNamespaceOption = Annotated[str | None, typer.Option(
    "--operator-namespace", metavar="NAMESPACE",
    help="Where the rook-ceph-operator Deployment is (default: the cluster's namespace, -n).")]


def _namespace(opts: GlobalOptions) -> str:
    # Rook's namespace, not the kubeconfig's: `kubectl rook-ceph` defaults the same way.
    return opts.namespace or DEFAULT_NAMESPACE


def status_table(data: dict[str, Any]) -> str:
    rows = []
    for m in data["mons"]:
        st = m["monStatus"] or {}
        rows.append([m["mon"], m["deployment"], f"{m['ready']}/{m['replicas']}", m["node"] or "-",
                     m["address"] or "-", m["podState"], "yes" if m["running"] else "no", st.get("state", "-"),
                     st.get("electionEpoch", "-"), ",".join(st.get("quorum") or []) or "-",
                     st.get("monmapEpoch", "-"), ",".join(st.get("monmap") or []) or "-",
                     "" if m["running"] else (m["error"] or "")])
    text = render_table(["MON", "DEPLOYMENT", "READY", "NODE", "ADDRESS", "POD", "PROCESS", "STATE", "ELECTION",
                         "QUORUM", "MONMAP-EPOCH", "MONMAP", "ERROR"], rows)
    op = data["operator"]
    fields = [
        ["quorum", ",".join(data["quorum"]) or "none"],
        ["operator", f"{op['namespace']}/{op['name']} {op['ready']}/{op['replicas']}" if op else "not found"],
        ["rook-ceph-mon-endpoints", ",".join(f"{k}={v}" for k, v in data["endpoints"].items()) or "-"],
        ["rook-ceph-config mon_host", ",".join(data["monHost"]) or "-"],
        ["rook-ceph-config mon_initial_members", ",".join(data["monInitialMembers"]) or "-"],
        ["fsid", data["fsid"] or "-"],
    ]
    text += "\n" + render_table(["FIELD", "VALUE"], fields)
    for note in data["notes"]:
        text += f"note: {note}\n"
    return text


@app.command("status", short_help="Show every mon, its quorum view, the operator and Rook's mon config")
def status(ctx: typer.Context, operator_namespace: OperatorNamespaceOption = None) -> None:
    """Show every mon of a Rook-Ceph cluster as Kubernetes and as Ceph see it.

    For each mon: its Deployment and ready replicas, node, address (rook-ceph-mon-endpoints), pod state,
    whether its ceph-mon process answers, and its mon_status through the admin socket (state, election
    epoch, quorum, monmap epoch and members), asked with an exec into the mon's pod, so it works without
    quorum. Then the operator's replicas, and the endpoints ConfigMap and rook-ceph-config Secret as Rook
    reads them. Changes nothing. The cluster's namespace is -n, default rook-ceph (not the kubeconfig's).

    \b
    Examples:
      kubectl dr rook status
      kubectl dr rook status -n my-ceph -o json
    """
    from kubectl_dr.rook import status as rook_status

    opts = options(ctx)
    if opts.dry_run != "none":
        raise UsageError("rook status changes nothing: it has no dry run")
    result = rook_status.gather(opts.session().kube, _namespace(opts), operator_namespace)
    data = result.to_dict()
    emit(data, opts.output, table=status_table(data))




RESTORE_HELP = """\
Restore the quorum of Rook-Ceph's mons from one healthy mon, GOOD: Rook's "Restoring Mon Quorum", checked.

Refused unless GOOD answers on its admin socket and no other mon that answers has a newer monmap or
election epoch (it says which and why), and while the mons still have a quorum. Then, each step recorded in
the ConfigMap kubectl-dr-rook-restore-quorum before the next: the operator and the other mons are scaled to
0; GOOD's Deployment is replaced by a maintenance copy that sleeps; GOOD's store and every object the run
changes are copied into the repository (byte count and SHA-256 checked on both sides, with a break-glass
runbook of the same steps as kubectl commands); the monmap is extracted, the other mons are removed, it is
injected, and read back each time with monmaptool --print; rook-ceph-mon-endpoints and rook-ceph-config name
GOOD alone; the maintenance copy goes and GOOD's Deployment is put back exactly as saved; once GOOD is the
leader of a quorum of one, the operator is scaled back so Rook grows the quorum again.

The other mons' Deployments (at 0), Services and claims are left in place and named: Rook replaces them.
An interrupted run is resumed by running the same command again. --undo, before the inject, puts every
object back as it was (the backup stays). The cluster's namespace is -n, default rook-ceph (not the
kubeconfig's).

\b
Examples:
  kubectl dr rook status
  kubectl dr rook mon restore-quorum a --dry-run=client
  kubectl dr rook mon restore-quorum a --yes
  kubectl dr rook mon restore-quorum a --undo
"""


def _result_table(data: dict[str, Any]) -> str:
    fields = [["good mon", data["good"]], ["removed from the monmap", ",".join(data["bad"]) or "-"],
              ["quorum", ",".join(data["quorum"]) or "-"], ["backup", data["backup"] or "-"],
              ["location", data["location"] or "-"], ["steps done", ",".join(data["steps"]) or "-"],
              ["left for Rook to replace", ", ".join(data["leftForRook"]) or "-"]]
    return render_table(["FIELD", "VALUE"], fields)


@mon_app.command("restore-quorum", help=RESTORE_HELP,
                 short_help="Force a quorum of one on a healthy mon, backed up, journaled, undoable")
def restore_quorum(
    ctx: typer.Context,
    good: Annotated[str, typer.Argument(metavar="GOOD", help="The mon (a, b, …) whose store becomes the quorum.")],
    undo: Annotated[bool, typer.Option("--undo", help=(
        "Put every object back as it was before the run (only before the monmap was injected)."))] = False,
    operator_namespace: OperatorNamespaceOption = None,
    repo: PlainRepoOption = None,
    s3_endpoint: S3EndpointOption = None,
    encrypt_to: EncryptToOption = None,
    timeout: Annotated[str, typer.Option("--timeout", metavar="DURATION", help=(
        "How long to wait for each pod and for the quorum of one."))] = "5m",
) -> None:
    from pathlib import Path

    from kubectl_dr.cli.durations import positive_seconds
    from kubectl_dr.cli.repo_options import open_repo
    from kubectl_dr.rook.restore import Job

    opts = options(ctx)
    if opts.dry_run == "server":
        raise UsageError("restore-quorum has no server-side dry run (its steps run in a pod): use --dry-run=client")
    seconds = positive_seconds(timeout)
    session = opts.session()
    console = session.console
    # The runbook file goes beside the command's output, where the operator is: the copy in the backup may be
    # in a bucket out of reach when it is needed.
    job = Job(session, _namespace(opts), good, operator_namespace=operator_namespace, timeout=seconds,
              runbook_dir=Path.cwd())
    if undo:
        if opts.dry_run == "client":
            journal = job.read_journal()
            console.say(f"(dry run) would undo the run {journal.get('runId') if journal else '(none in progress)'}")
            return
        console.confirm(f"undo the restore-quorum run to mon {good} (put every object back)")
        result = job.undo()
    else:
        repository = None
        if opts.dry_run == "none":
            repository = open_repo(repo, s3_endpoint=s3_endpoint, encrypt_to=encrypt_to)
            repository.preflight()
            from kubectl_dr.repo.safety import SECRETS_HELD, confirm_plaintext_secrets

            confirm_plaintext_secrets(repository, f"the backup of mon {good}'s store", console,
                                      holds=SECRETS_HELD["rook-mon-quorum"])
        result = job.run(repository)
        if result.dry_run:
            console.say(result.runbook)
            console.say(f"(dry run) would write this break-glass runbook to "
                        f"{Path.cwd() / 'rook-restore-quorum-runbook-RUN.sh'} (RUN: the run's ID) before anything "
                        "changes")
            console.say(f"(dry run) would restore the quorum to mon {good} alone, removing {', '.join(result.bad)}; "
                        "nothing was changed")
    data = result.to_dict()
    emit(data, opts.output, table=_result_table(data))
