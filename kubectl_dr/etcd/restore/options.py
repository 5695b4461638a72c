"""What a person asks of `kubectl dr etcd restore`: parsed once by the CLI, read by every step of the restore."""

from __future__ import annotations

from dataclasses import dataclass

from kubectl_dr.etcd.topology import pod_namespace

DEFAULT_HELPER_IMAGE = "busybox"


@dataclass(frozen=True)
class RestoreOptions:
    source: str  # --from: a backup ID, `latest` or a snapshot file
    namespace_flag: str | None = None  # -n as given: where the helper pods run (kube-system unless given)
    from_cluster: str | None = None
    from_other_cluster: bool = False
    etcd_image: str | None = None  # None: the etcd static pod's own image
    no_bump: bool = False
    node_timeout: int = 300  # how long each node waits for the new cluster to form before it rolls back
    helper_image: str = DEFAULT_HELPER_IMAGE
    restart_kubelets: bool = False
    hold_timeout: int = 180  # external etcd: how long the nodes hold their API servers before the rewrite begins
    # External etcd: reached from this machine through these endpoints (the job checks them: topology.direct).
    endpoints: tuple[str, ...] | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    dry_run: str = "none"

    @property
    def namespace(self) -> str:
        return pod_namespace(self.namespace_flag)

    @property
    def external(self) -> bool:
        """Any of the direct-access flags: an external etcd's restore (--cacert alone is refused as such)."""
        return bool(self.endpoints or self.cacert or self.cert or self.key)

    @property
    def client_dry_run(self) -> bool:
        return self.dry_run == "client"
