"""Where everything lives inside a cluster's state directory (see tests/cluster/README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def rbac_policy(self) -> Path:
        return self.root / "rbac-policy.yaml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def node(self, name: str) -> Path:
        """The node's host filesystem root: hostPath /x/y lives at node(name)/x/y."""
        return self.root / "nodes" / name

    def host_path(self, node: str, path: str) -> Path:
        return self.node(node) / path.lstrip("/")

    def etcd_pki(self, node: str) -> Path:
        return self.host_path(node, "/etc/kubernetes/pki/etcd")

    def manifests(self, node: str) -> Path:
        return self.host_path(node, "/etc/kubernetes/manifests")

    def etcd_data(self, node: str) -> Path:
        return self.host_path(node, "/var/lib/etcd")

    def read_state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def write_state(self, state: dict[str, Any]) -> None:
        # Written atomically: `status` and the fixtures read it while `up` may still be writing.
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.state_file)
