"""`kubectl dr rook`: Rook-Ceph's monitors, and restoring their quorum from one healthy mon."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kubectl_dr.cli.context import options
from kubectl_dr.cli.globals import GlobalOptions
from kubectl_dr.errors import UsageError
from kubectl_dr.ui.output import emit, render_table

DEFAULT_NAMESPACE = "rook-ceph"

app = typer.Typer(help="Rook-Ceph's monitors: their state as Kubernetes and Ceph see it, and restoring mon quorum "
                       "from one healthy mon.", no_args_is_help=True)
mon_app = typer.Typer(help="Act on Rook-Ceph's mons.", no_args_is_help=True)
app.add_typer(mon_app, name="mon", short_help="Restore mon quorum from one healthy mon")

OperatorNamespaceOption = Annotated[str | None, typer.Option(
    "--operator-namespace", metavar="NAMESPACE",
    help="Where the rook-ceph-operator Deployment is (default: the cluster's namespace).")]


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
    reads them. Changes nothing.

    \b
    Examples:
      kubectl dr rook status
      kubectl dr rook status -n my-ceph -o json
    """
    from kubectl_dr.rook import status as rook_status

    opts = options(ctx)
    if opts.dry_run != "none":
        raise UsageError("rook status changes nothing: it has no dry run")
    result = rook_status.gather(opts.kube(), _namespace(opts), operator_namespace)
    data = result.to_dict()
    emit(data, opts.output, table=status_table(data))


