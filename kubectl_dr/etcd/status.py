"""`kubectl dr etcd status`: members, leader, and per endpoint health, version, sizes, revision, raft."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubectl_dr.console import Console
from kubectl_dr.errors import UsageError
from kubectl_dr.etcd import etcdctl, podrun, podspec
from kubectl_dr.etcd.errors import EtcdError, MemberError, all_members_failed
from kubectl_dr.etcd.model import Alarm, ClusterStatus, EndpointInfo, MemberInfo
from kubectl_dr.etcd.topology import Direct, Discovered, StaticMember, pod_namespace, resolve
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult
from kubectl_dr.session import Session


@dataclass(frozen=True)
class StatusOptions:
    """What `etcd status` was asked, as plain values."""

    node: str | None = None
    endpoints: list[str] | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


def run(session: Session, opts: StatusOptions) -> ClusterStatus:
    """`kubectl dr etcd status`: the members from --endpoints (asked directly) or from the static pods (asked from a
    pod on a control-plane node; if that member cannot be used, from the next one)."""
    if session.dry:
        raise UsageError("etcd status cannot run as a dry run: it needs its pod to ask etcd (and changes nothing "
                         "else)")
    topo = resolve(lambda: session.kube, opts.endpoints, opts.cacert, opts.cert, opts.key)
    if isinstance(topo, Direct):
        if opts.node:
            raise UsageError("--node does not apply with --endpoints")
        return direct(topo)
    return ask(session.kube, session.console, topo, pod_namespace(session.namespace_flag), opts.node)


def ask(kube: Kube, console: Console, topology: Discovered, namespace: str, node: str | None = None) -> ClusterStatus:
    """`run` for a job that asks on its way (a restore, before and after): the kube handle and console only."""
    failures: list[MemberError] = []
    candidates = topology.candidates(node)
    for index, member in enumerate(candidates):
        try:
            return _from_member(kube, member, namespace, console)
        except MemberError as exc:
            if exc.fatal:
                raise
            failures.append(exc)
            if index + 1 < len(candidates):  # the last failure is the error itself
                console.warn(f"cannot ask etcd from node {member.node}: {exc.message}")
    raise all_members_failed("etcd status", failures)


def _from_member(kube: Kube, member: StaticMember, namespace: str, console: Console) -> ClusterStatus:
    console.say(f"asking etcd from a pod on node {member.node}")
    pod = podrun.start(kube, podspec.status_pod(member, namespace), member, "etcd status", console=console)
    try:
        def run(endpoints: list[str], *args: str) -> tuple[ExecResult, bytes]:
            result, out = podrun.run(kube, pod, podspec.STATUS_CONTAINER, etcdctl.command(member, endpoints, *args))
            if result.status is None:
                result.check(f"etcdctl {' '.join(args[:2])} on node {member.node}")  # a broken stream
            return result, out

        def ask(endpoints: list[str], *args: str) -> tuple[bool, bytes, bytes]:
            result, out = run(endpoints, *args)
            return result.ok, out, result.stderr

        listed, out = run([member.client_url], "member", "list", "-w", "json")
        if not listed.ok:
            # How it ended first (an exit code, or the API server's reason): etcdctl killed before it wrote a
            # word left an error that ended in a colon.
            said = listed.stderr.decode(errors="replace").strip()[-500:]
            raise MemberError(member.node, f"etcdctl member list failed on node {member.node}: "
                                           f"{listed.describe()}" + (f": {said}" if said else ""))
        cluster_id, members = etcdctl.parse_member_list(out)
        # Every client URL of every member, as `etcdctl --cluster` does: a member that is down still has
        # its row, with the reason it did not answer.
        endpoints = list(dict.fromkeys(u for m in members for u in m.client_urls)) or [member.client_url]
        # In parallel: a member that is down costs each question its full command timeout.
        with ThreadPoolExecutor(3) as pool:
            asked_status = pool.submit(ask, endpoints, "endpoint", "status", "-w", "json")
            asked_health = pool.submit(ask, endpoints, "endpoint", "health", "-w", "json")
            asked_alarms = pool.submit(ask, [member.client_url], "alarm", "list", "-w", "json")
            _, out, err = asked_status.result()
            statuses = etcdctl.parse_endpoint_status(out, err)
            health = etcdctl.parse_endpoint_health(asked_health.result()[1])
            ok, out, _ = asked_alarms.result()
            alarms = etcdctl.parse_alarm_list(out) if ok else []
    except ValueError as exc:
        raise EtcdError(f"cannot read etcdctl's answer on node {member.node}: {exc}") from None
    finally:
        pod.delete(wait=True)
    rows = etcdctl.merge(statuses, health, endpoints)
    return ClusterStatus("pod", member.node, cluster_id, members, rows, alarms).finish()


def direct(topology: Direct) -> ClusterStatus:
    """Ask every given endpoint at once with etcd3; each answers for itself (status is served by the
    member locally, without quorum), so a cluster that lost quorum still shows a row per member: its
    version, sizes, revision, raft term and index, and the leader as that member sees it (none, when
    quorum is lost). The member list and alarms come from the first endpoint that can give them."""
    with ThreadPoolExecutor(max(len(topology.endpoints), 1)) as pool:
        asked = [pool.submit(_ask_endpoint, url, topology) for url in topology.endpoints]
        answers = [future.result() for future in asked]
    rows = [row for row, _, _ in answers]
    cluster_id: str | None = None
    members: list[MemberInfo] = []
    alarms: list[Alarm] = []
    via = ""
    for row, listed, found_alarms in answers:
        if listed is not None and not via:
            (cluster_id, members), via = listed, row.endpoint
        if found_alarms is not None and not alarms:
            alarms = found_alarms
    if not any(r.version for r in rows):
        errors = "\n".join(f"  {r.endpoint}: {r.error}" for r in rows)
        certificate = any(_refused(r.error or "") for r in rows)
        raise EtcdError(f"no etcd endpoint answered:\n{errors}",
                        hint="Check --cacert, --cert and --key: the member refused the client certificate or we "
                             "do not trust its server certificate." if certificate else
                             "Check that the endpoints are reachable from this machine.")
    return ClusterStatus("direct", via or rows[0].endpoint, cluster_id, members, rows, alarms).finish()


def _refused(text: str) -> bool:
    from kubectl_dr.etcd.client import refused_certificate

    return refused_certificate(text)


def _ask_endpoint(url: str, topology: Direct) -> tuple[EndpointInfo, tuple[str, list[MemberInfo]] | None,
                                                       list[Alarm] | None]:
    """One endpoint's own answers. Each question may fail on its own: what needs quorum (the health read,
    the alarm list) fails when it is lost, and the member's local status is still worth showing."""
    from kubectl_dr.etcd.client import Endpoint, is_rpc_error, rpc_error_text

    listed: tuple[str, list[MemberInfo]] | None = None
    alarms: list[Alarm] | None = None
    try:
        with Endpoint(url, topology) as ep:
            row = ep.status()
            if not row.leader and not any("no leader" in e for e in row.errors):
                row.errors.append("no leader")
            row.healthy, row.error, row.took = ep.health()
            if row.error and not row.leader:
                row.error = f"no answer to a quorum read: the member has no leader, quorum lost? ({row.error})"
            try:
                listed = ep.members()
            except Exception as exc:
                if not is_rpc_error(exc):
                    raise
            if row.healthy:  # the alarm list goes through raft: without quorum it only costs the timeout
                with contextlib.suppress(Exception):
                    alarms = ep.alarms()
    except MemberError as exc:
        row = EndpointInfo(endpoint=url, error=exc.message)
    except Exception as exc:
        if not is_rpc_error(exc):
            raise
        row = EndpointInfo(endpoint=url, error=rpc_error_text(exc))
    return row, listed, alarms
