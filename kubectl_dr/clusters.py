"""Which cluster a backup came from, and the rules that keep one cluster's backups from another's restore.

Two clusters writing to one repository is normal, so every backup records the identity of its cluster:
the UID of its kube-system namespace (the identity: it changes only when the cluster is rebuilt, and an
etcd snapshot carries it), with the API server URL and the kubeconfig context name as hints for people.
Shared by the repository (which stores it in the manifest) and the kube layer (which reads it), so it
lives beside both rather than in either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubectl_dr.errors import DrError

LATEST = "latest"
OLDER_NOTE = "records no cluster; written by an older kubectl-dr"


@dataclass(frozen=True)
class ClusterIdentity:
    uid: str  # kube-system's metadata.uid: what decides
    server: str = ""  # hints, for people: the API server URL and the kubeconfig context of the writer
    context: str = ""

    @property
    def name(self) -> str:
        return self.context or self.server or "unnamed"

    def label(self) -> str:
        # kubeadm names every cluster's context kubernetes-admin@kubernetes: the server tells two apart.
        at = f" at {self.server}" if self.context and self.server else ""
        return f"cluster {self.name}{at} (uid {self.uid})"

    def matches(self, ref: str) -> bool:
        """``ref`` is this cluster's UID, context name or server URL."""
        return ref in (self.uid, self.context, self.server)

    def to_dict(self) -> dict[str, str]:
        data = {"uid": self.uid}
        if self.server:
            data["server"] = self.server
        if self.context:
            data["context"] = self.context
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ClusterIdentity:
        if not isinstance(data, dict) or not isinstance(data.get("uid"), str) or not data["uid"]:
            raise ValueError("cluster is not an object with a uid")
        return cls(data["uid"], str(data.get("server") or ""), str(data.get("context") or ""))


class ClusterChoiceError(DrError):
    """--from-cluster/--cluster names no cluster, or more than one."""


def pick(ref: str, known: Iterable[ClusterIdentity]) -> str:
    """The UID of the cluster ``ref`` names among ``known``: its UID, else a unique context name or server URL.

    A context name is only a hint (two kubeconfigs may call different clusters "prod"), so a name that fits
    two UIDs is refused with both shown rather than one of them guessed.
    """
    clusters: dict[str, ClusterIdentity] = {}
    for identity in known:
        clusters.setdefault(identity.uid, identity)
    if ref in clusters:
        return ref
    fitting = sorted((i for i in clusters.values() if i.matches(ref)), key=lambda i: i.uid)
    if len(fitting) == 1:
        return fitting[0].uid
    if fitting:
        raise ClusterChoiceError(f'"{ref}" names {len(fitting)} clusters: '
                                 + "; ".join(describe(i) for i in fitting),
                                 hint="Name the cluster by its uid.")
    shown = "; ".join(describe(i) for i in sorted(clusters.values(), key=lambda i: i.name)) or "none"
    raise ClusterChoiceError(f'no backup of a cluster "{ref}" (its context name, server URL or uid)',
                             hint=f"Clusters with backups here: {shown}.")


def describe(identity: ClusterIdentity) -> str:
    hints = ", ".join(h for h in (identity.context and f"context {identity.context}",
                                  identity.server and f"server {identity.server}") if h)
    return f"uid {identity.uid}" + (f" ({hints})" if hints else "")


def origin_note(backup_id: str, recorded: ClusterIdentity | None, current: ClusterIdentity) -> str | None:
    """What a restore must say about where its backup came from: None when it is this cluster's own."""
    if recorded is None:
        return f"backup {backup_id} {OLDER_NOTE}"
    if recorded.uid == current.uid:
        return None
    return f"backup {backup_id} is of {recorded.label()}, restoring into {current.label()}"


def refuse_other(backup_id: str, recorded: ClusterIdentity | None, current: ClusterIdentity, what: str) -> None:
    """Refuse to restore another cluster's backup into this one (etcd, control plane): almost never meant."""
    if recorded is None or recorded.uid == current.uid:
        return
    raise DrError(f"backup {backup_id} is of {recorded.label()}, not of {current.label()}: {what} refuses to "
                  "restore another cluster's backup",
                  hint="Pick this cluster's own backup (kubectl dr backups list), or pass --from-other-cluster if "
                       "you mean to put the other cluster's state here.")


def latest_of(ref: str, current: ClusterIdentity | None, from_cluster: str | None,
              pick_uid: Callable[[str], str], unknown_why: str = "") -> str | None:
    """The cluster UID whose backups ``--from latest`` chooses among; None for an explicit ID (any cluster).

    ``current`` is the cluster the command works on (None: the user may not read kube-system, said in
    ``unknown_why``); ``--from-cluster`` names another one, through ``pick_uid`` (the repository's clusters).
    """
    if from_cluster:
        if ref != LATEST:
            raise DrError("--from-cluster only goes with --from latest",
                          hint="A backup given by its ID is that backup, whatever its cluster.")
        return pick_uid(from_cluster)
    if ref != LATEST:
        return None
    if current is None:
        raise DrError(f"cannot tell which cluster this is ({unknown_why or 'kube-system is not readable'}), and "
                      "`--from latest` picks only this cluster's backups",
                      hint="Give the backup by --from ID, or name its cluster with --from-cluster NAME|UID.")
    return current.uid
