"""Files on a node's own filesystem, read and changed through a short-lived pod with hostPath mounts.

kubectl dr never logs in to a node: what a control-plane node keeps on disk (static pod manifests, the
etcd data dir, the PKI) is reached through a helper pod pinned to that node, and every read and write is
checked by size and SHA-256 computed inside the pod.
"""

from kubectl_dr.nodes.hostpod import HostMount, HostPod, start_host_pod

__all__ = ["HostMount", "HostPod", "start_host_pod"]
