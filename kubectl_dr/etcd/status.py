"""`kubectl dr etcd status`: members, leader, and per endpoint health, version, sizes, revision, raft."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kubectl_dr.etcd import etcdctl, podrun, podspec
from kubectl_dr.etcd.errors import EtcdError, MemberError, all_members_failed
from kubectl_dr.etcd.model import Alarm, ClusterStatus, EndpointInfo, MemberInfo
from kubectl_dr.etcd.topology import Direct, Discovered, StaticMember
from kubectl_dr.kube.client import Kube
from kubectl_dr.ui.output import message


def via_pod(kube: Kube, topology: Discovered, namespace: str, node: str | None = None) -> ClusterStatus:
    """Ask from a pod on a control-plane node; if that member cannot be used, from the next one."""
    failures: list[MemberError] = []
    candidates = topology.candidates(node)
    for index, member in enumerate(candidates):
        try:
            return _from_member(kube, member, namespace)
        except MemberError as exc:
            if exc.fatal:
                raise
            failures.append(exc)
            if index + 1 < len(candidates):  # the last failure is the error itself
                message(f"warning: cannot ask etcd from node {member.node}: {exc.message}")
    raise all_members_failed("etcd status", failures)


def _from_member(kube: Kube, member: StaticMember, namespace: str) -> ClusterStatus:
    message(f"asking etcd from a pod on node {member.node}")
    pod = podrun.start(kube, podspec.status_pod(member, namespace), member, "etcd status")
    try:
        def ask(endpoints: list[str], *args: str) -> tuple[bool, bytes, bytes]:
            result, out = podrun.run(kube, pod, podspec.STATUS_CONTAINER, etcdctl.command(member, endpoints, *args))
            if result.status is None:
                result.check(f"etcdctl {' '.join(args[:2])} on node {member.node}")  # a broken stream
            return result.ok, out, result.stderr

        ok, out, err = ask([member.client_url], "member", "list", "-w", "json")
        if not ok:
            raise MemberError(member.node, f"etcdctl member list failed on node {member.node}: "
                                           f"{err.decode(errors='replace').strip()[-500:]}")
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
    """Ask each given endpoint with etcd3; the member list and alarms come from the first that answers."""
    from kubectl_dr.etcd.client import Endpoint, is_rpc_error, refused_certificate, rpc_error_text

    cluster_id: str | None = None
    members: list[MemberInfo] = []
    alarms: list[Alarm] = []
    via = ""
    rows: list[EndpointInfo] = []
    for url in topology.endpoints:
        try:
            with Endpoint(url, topology) as ep:
                row = ep.status()
                row.healthy, row.error, row.took = ep.health()
                if not via:
                    cluster_id, members = ep.members()
                    alarms = ep.alarms()
                    via = url
        except MemberError as exc:
            row = EndpointInfo(endpoint=url, error=exc.message)
        except Exception as exc:
            if not is_rpc_error(exc):
                raise
            row = EndpointInfo(endpoint=url, error=rpc_error_text(exc))
        rows.append(row)
    if not via:
        errors = "\n".join(f"  {r.endpoint}: {r.error}" for r in rows)
        certificate = any(refused_certificate(r.error or "") for r in rows)
        raise EtcdError(f"no etcd endpoint answered:\n{errors}",
                        hint="Check --cacert, --cert and --key: the member refused the client certificate or we "
                             "do not trust its server certificate." if certificate else
                             "Check that the endpoints are reachable from this machine.")
    return ClusterStatus("direct", via, cluster_id, members, rows, alarms).finish()
