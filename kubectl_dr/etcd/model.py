"""What `kubectl dr etcd status` reports, whichever way it was gathered (pod with etcdctl, or etcd3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# etcdserverpb.AlarmType
ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


def member_id(value: int | str) -> str:
    """etcd prints member IDs in hex (etcdctl's table, its logs); JSON carries the integer."""
    return f"{int(value):x}"


@dataclass
class MemberInfo:
    id: str
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False
    is_leader: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "peerURLs": self.peer_urls, "clientURLs": self.client_urls,
                "isLeader": self.is_leader, "isLearner": self.is_learner}


@dataclass
class Alarm:
    member_id: str
    alarm: str

    def to_dict(self) -> dict[str, str]:
        return {"memberID": self.member_id, "alarm": self.alarm}


@dataclass
class EndpointInfo:
    endpoint: str
    healthy: bool = False
    error: str | None = None
    took: str | None = None
    member_id: str | None = None
    member: str | None = None
    version: str | None = None
    db_size: int | None = None
    db_size_in_use: int | None = None
    revision: int | None = None
    raft_term: int | None = None
    raft_index: int | None = None
    raft_applied_index: int | None = None
    leader: str | None = None
    is_learner: bool = False
    errors: list[str] = field(default_factory=list)  # what the member reports (active alarms)

    @property
    def is_leader(self) -> bool:
        return self.member_id is not None and self.member_id == self.leader

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint, "member": self.member, "memberID": self.member_id, "healthy": self.healthy,
            "error": self.error, "took": self.took, "version": self.version, "dbSize": self.db_size,
            "dbSizeInUse": self.db_size_in_use, "revision": self.revision, "raftTerm": self.raft_term,
            "raftIndex": self.raft_index, "raftAppliedIndex": self.raft_applied_index, "leader": self.leader,
            "isLeader": self.is_leader, "isLearner": self.is_learner, "errors": self.errors,
        }


@dataclass
class ClusterStatus:
    mode: str  # "pod" (etcdctl in a pod on a control-plane node) or "direct" (etcd3 from this machine)
    via: str  # the node whose pod asked, or the endpoint that answered the member list
    cluster_id: str | None
    members: list[MemberInfo]
    endpoints: list[EndpointInfo]
    alarms: list[Alarm]

    @property
    def leader(self) -> str | None:
        for e in self.endpoints:
            if e.leader:
                return e.leader
        return None

    def finish(self) -> ClusterStatus:
        """Tie endpoints to members (also the ones that did not answer) and mark the leader."""
        by_url = {u.rstrip("/"): m for m in self.members for u in m.client_urls}
        by_id = {m.id: m for m in self.members}
        for e in self.endpoints:
            m = by_id.get(e.member_id or "") or by_url.get(e.endpoint.rstrip("/"))
            if m is not None:
                e.member_id = e.member_id or m.id
                e.member = m.name
                e.is_learner = e.is_learner or m.is_learner
        leader = self.leader
        for m in self.members:
            m.is_leader = m.id == leader
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "via": self.via, "clusterID": self.cluster_id, "leader": self.leader,
            "members": [m.to_dict() for m in self.members],
            "endpoints": [e.to_dict() for e in self.endpoints],
            "alarms": [a.to_dict() for a in self.alarms],
        }
