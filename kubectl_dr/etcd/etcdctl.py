"""etcdctl command lines for our pods, and the parsing of what etcdctl prints with `-w json`.

The etcd image has nothing but etcd and etcdctl (no shell), so each question is one etcdctl process and
its JSON on stdout. Failures for single endpoints are on stderr in etcdctl's own words; we keep them as
the endpoint's error rather than failing the whole status.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubectl_dr.etcd.model import ALARM_NAMES, Alarm, EndpointInfo, MemberInfo, member_id
from kubectl_dr.etcd.topology import StaticMember

# Short: a member that is down must not hold up the answer for the others.
DIAL_TIMEOUT = "2s"
COMMAND_TIMEOUT = "5s"
_STATUS_FAILED = re.compile(r"^Failed to get the status of endpoint (\S+) \((.*)\)\s*$")


def command(member: StaticMember, endpoints: list[str], *args: str, timeouts: bool = True) -> list[str]:
    """etcdctl with the member's CA and kubeadm's healthcheck client certificate, as mounted in our pods."""
    cmd = [
        "etcdctl",
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={member.file('ca').container_path}",
        f"--cert={member.file('cert').container_path}",
        f"--key={member.file('key').container_path}",
    ]
    if timeouts:
        cmd += [f"--dial-timeout={DIAL_TIMEOUT}", f"--command-timeout={COMMAND_TIMEOUT}"]
    return [*cmd, *args]


def _json(stdout: bytes | str, what: str) -> Any:
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"etcdctl {what} printed something that is not JSON: {text[:200]!r}") from None


def parse_member_list(stdout: bytes | str) -> tuple[str | None, list[MemberInfo]]:
    """`member list -w json` → (cluster ID, members)."""
    data = _json(stdout, "member list") or {}
    header = data.get("header") or {}
    cluster = member_id(header["cluster_id"]) if "cluster_id" in header else None
    members = [
        MemberInfo(
            id=member_id(m["ID"]),
            # A member added but not started yet has no name; etcdctl prints it as "".
            name=str(m.get("name") or ""),
            peer_urls=list(m.get("peerURLs") or []),
            client_urls=list(m.get("clientURLs") or []),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in data.get("members") or []
    ]
    return cluster, members


def parse_endpoint_status(stdout: bytes | str, stderr: bytes | str = b"") -> list[EndpointInfo]:
    """`endpoint status -w json` (answers) plus its stderr (endpoints that did not answer)."""
    infos: list[EndpointInfo] = []
    for item in _json(stdout, "endpoint status") or []:
        status = item.get("Status") or {}
        header = status.get("header") or {}
        infos.append(EndpointInfo(
            endpoint=str(item.get("Endpoint", "")),
            healthy=True,
            member_id=member_id(header["member_id"]) if "member_id" in header else None,
            version=status.get("version"),
            db_size=_int(status.get("dbSize")),
            db_size_in_use=_int(status.get("dbSizeInUse")),
            revision=_int(header.get("revision")),
            raft_term=_int(status.get("raftTerm")),
            raft_index=_int(status.get("raftIndex")),
            raft_applied_index=_int(status.get("raftAppliedIndex")),
            leader=member_id(status["leader"]) if status.get("leader") else None,
            is_learner=bool(status.get("isLearner", False)),
            errors=[str(e) for e in status.get("errors") or []],
        ))
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    for line in text.splitlines():
        match = _STATUS_FAILED.match(line.strip())
        if match:
            infos.append(EndpointInfo(endpoint=match.group(1), healthy=False, error=match.group(2)))
    return infos


def parse_endpoint_health(stdout: bytes | str) -> dict[str, dict[str, Any]]:
    """`endpoint health -w json` → endpoint: {health, took, error}."""
    return {str(h.get("endpoint", "")): h for h in _json(stdout, "endpoint health") or []}


def parse_alarm_list(stdout: bytes | str) -> list[Alarm]:
    data = _json(stdout, "alarm list") or {}
    return [Alarm(member_id(a.get("memberID", 0)), ALARM_NAMES.get(int(a.get("alarm", 0)), str(a.get("alarm"))))
            for a in data.get("alarms") or []]


def merge(statuses: list[EndpointInfo], health: dict[str, dict[str, Any]], endpoints: list[str]) -> list[EndpointInfo]:
    """One row per endpoint asked about, in that order: status fields, then health's verdict and error."""
    by_endpoint = {s.endpoint: s for s in statuses}
    rows: list[EndpointInfo] = []
    for endpoint in endpoints:
        row = by_endpoint.get(endpoint) or EndpointInfo(endpoint=endpoint, healthy=False,
                                                        error="etcdctl reported nothing for this endpoint")
        verdict = health.get(endpoint)
        if verdict is not None:
            row.took = verdict.get("took")
            row.healthy = bool(verdict.get("health")) and row.error is None
            if verdict.get("error"):
                row.error = str(verdict["error"])
            elif not verdict.get("health") and row.error is None:
                row.error = "unhealthy"
        rows.append(row)
    return rows


def snapshot_error_reason(log: str) -> str | None:
    """Why etcdctl got no answer, from its log: "certificate" or "unreachable" (or None: unknown).

    With TLS 1.3 a member that rejects the client certificate just closes the connection after the
    handshake, and etcdctl only says "connection closed" or "connection reset by peer"; a member that is
    down refuses the connection.
    """
    lowered = log.lower()
    if any(s in lowered for s in ("bad certificate", "certificate required", "unknown certificate authority",
                                  "certificate signed by unknown authority", "authentication handshake failed")):
        return "certificate"
    if "connection refused" in lowered or "no route to host" in lowered:
        return "unreachable"
    # The TCP connection was accepted and then dropped right after the handshake: what a TLS 1.3 server
    # does to a client certificate it rejects.
    # gRPC words it in several ways depending on when the close lands (seen: all four below).
    if any(s in lowered for s in ("connection closed", "connection reset by peer", "failed to write client preface",
                                  "use of closed network connection")):
        return "certificate"
    if "context deadline exceeded" in lowered:
        return "unreachable"
    return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
