"""What a person asks of `kubectl dr etcd restore`: parsed once by the CLI, read by every step of the restore."""

from __future__ import annotations

from dataclasses import dataclass

from kubectl_dr.etcd.topology import Direct

DEFAULT_HELPER_IMAGE = "busybox"


@dataclass(frozen=True)
class RestoreOptions:
    source: str  # --from: a backup ID, `latest` or a snapshot file
    namespace: str  # where the helper pods run (kube-system unless -n)
    from_cluster: str | None = None
    from_other_cluster: bool = False
    etcd_image: str | None = None  # None: the etcd static pod's own image
    no_bump: bool = False
    node_timeout: int = 300  # how long each node waits for the new cluster to form before it rolls back
    helper_image: str = DEFAULT_HELPER_IMAGE
    restart_kubelets: bool = False
    hold_timeout: int = 180  # external etcd: how long the nodes hold their API servers before the rewrite begins
    direct: Direct | None = None  # external etcd: reached from this machine through these endpoints
    dry_run: str = "none"

    @property
    def client_dry_run(self) -> bool:
        return self.dry_run == "client"
