"""Errors of `kubectl dr etcd`, each worded so the reader knows what to do next."""

from __future__ import annotations

from kubectl_dr.errors import DrError

DIRECT_HINT = (
    "If you can reach etcd from this machine, give its endpoints and client certificate:\n"
    "  kubectl dr etcd snapshot --endpoints https://ETCD_HOST:2379 --cacert ca.crt --cert client.crt --key client.key"
)


class EtcdError(DrError):
    """Something about etcd itself (topology, members, certificates) stands in the way."""


class TopologyError(EtcdError):
    """The etcd members cannot be found from the cluster's control-plane objects."""


class MemberError(EtcdError):
    """One member could not be used; another member may still do (the caller decides)."""

    def __init__(self, member: str, message: str, *, hint: str | None = None, fatal: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.member = member
        # Fatal: the same thing would happen on every member (RBAC, Pod Security), so do not try the next.
        self.fatal = fatal


def all_members_failed(action: str, failures: list[MemberError]) -> DrError:
    """One error for several failed members: each member's reason, and the hint of the last."""
    if len(failures) == 1:
        return failures[0]
    lines = "\n".join(f"  {f.member}: {f.message}" for f in failures)
    hints = [f.hint for f in failures if f.hint]
    return EtcdError(f"{action} failed on every member:\n{lines}", hint=hints[-1] if hints else None)
