"""An etcd helper pod on a member's node: the node pod of `nodes.hostpod`, its start failures said in etcd's terms.

The kube layer says *that* a pod cannot run, in the cluster's words; here that becomes *why* in etcd's
terms: a certificate file missing on the node, a member that refuses our client certificate or does not
answer. Those are `MemberError`s, so the caller can try another member; the same failure on every member
(an image that cannot be pulled, RBAC, Pod Security) is fatal and reported once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.etcd import etcdctl
from kubectl_dr.etcd.errors import MemberError
from kubectl_dr.etcd.topology import HEALTHCHECK_CERT, StaticMember
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import ExecResult
from kubectl_dr.nodes import hostpod

_MISSING_FILE = re.compile(r"hostPath type check failed: (\S+) is not a file")
_IMAGE = re.compile(r'image "([^"]+)"')


def start(kube: Kube, manifest: dict[str, Any], member: StaticMember, what: str, *, console: Console,
          helper_image: str | None = None, timeout: float = 180.0,
          may_finish: Collection[str] = ()) -> pods.HelperPod:
    """Create the pod and wait until its containers run (those in `may_finish`: ran and ended well); delete it
    again if it cannot, saying why for etcd."""
    return hostpod.start_pod(kube, manifest, what=what, console=console, timeout=timeout, may_finish=may_finish,
                             explain=lambda exc: explain(member, exc, helper_image))


def wait_started(pod: pods.HelperPod, member: StaticMember, *, console: Console, helper_image: str | None = None,
                 timeout: float = 180.0) -> None:
    """`start`'s wait for a pod already created (`pods.create`): running, or deleted with the reason for etcd."""
    hostpod.wait_started(pod, console=console, timeout=timeout,
                         explain=lambda exc: explain(member, exc, helper_image))


def explain(member: StaticMember, exc: pods.PodStartError, helper_image: str | None) -> MemberError:
    text, logs = exc.message, exc.hint or ""
    where = f"node {member.node}"
    missing = _MISSING_FILE.search(text)
    if missing:
        path = missing.group(1)
        role = next((f.role for f in member.client_files if f.host_path == path), "file")
        what = {"ca": "the etcd CA certificate", "cert": "the etcd client certificate",
                "key": "the etcd client key"}.get(role, "a certificate file")
        hint = (f"kubectl dr reads {what} from the etcd pod's hostPath volume \"{member.certs_volume['name']}\" "
                f"({member.certs_volume['hostPath']}).")
        if HEALTHCHECK_CERT.rsplit(".", 1)[0] in path:
            hint += (" kubeadm creates the healthcheck client certificate with "
                     "`kubeadm init phase certs etcd-healthcheck-client`.")
        return MemberError(member.node, f"certificate file {path} is missing on {where} ({text})", hint=hint)
    reason = etcdctl.snapshot_error_reason(logs)
    if reason == "certificate":
        return MemberError(
            member.node,
            f"the etcd member on {where} ({member.client_url}) refused the client certificate "
            f"{member.file('cert').container_path} (it dropped the connection at the TLS handshake), or its "
            "server certificate is not signed by the CA we used",
            hint=f"{logs}\nCheck that {member.file('cert').host_path} on {member.node} is signed by the etcd CA "
                 f"({member.file('ca').host_path}).".strip(),
        )
    if reason == "unreachable":
        return MemberError(member.node, f"the etcd member on {where} does not answer at {member.client_url}",
                           hint=logs or None)
    image = _IMAGE.search(text)
    fatal = bool(image and helper_image and image.group(1) == helper_image)
    return MemberError(member.node, text, hint=exc.hint, fatal=fatal)


def run(kube: Kube, pod: pods.HelperPod, container: str, command: list[str]) -> tuple[ExecResult, bytes]:
    """One command in the pod: its result (status channel, stderr tail) and its whole stdout."""
    return hostpod.run_in(kube, pod, container, command)
