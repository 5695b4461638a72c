"""The static pod that holds a control-plane node's API server down while an external etcd is rewritten.

With an external etcd the data is restored through etcd's client API (rewrite.py), from the client. The API
servers must not run meanwhile (they would serve, and write, a keyspace half old and half restored), and no
API server means the client cannot talk to the nodes. So the node and the client meet in etcd itself, under
`/kubectl-dr/restore/RUN/`:

- the node parks kube-apiserver, controller-manager and scheduler (as the data-dir restore does) and, once
  its API server no longer answers, puts `nodes/NODE = parked`;
- the client, once every node is parked, claims `applying` in a transaction that requires no `verdict`,
  rewrites the keys and verifies them, then puts `verdict = restored`;
- a node that sees a verdict puts its manifests back and reports `started`, then `done` once its API server
  is ready. A node that waited `HOLD_TIMEOUT` seconds without the client claiming `applying` puts
  `verdict = abandoned` in a transaction that requires no `applying`: exactly one of the two wins, so the
  API servers never start on a keyspace the client has begun to change. Once `applying` exists the nodes hold
  until a verdict comes, whatever the time: the client (or a second run of it) finishes the rewrite, or
  rewrites the safety snapshot back, and only then releases them.

The etcd image has etcdctl and a shell but no mv or date, so an init container copies busybox in beside it.
The pod is restarted by its kubelet if it dies; the script then resumes from its status file. Its last act
is to remove its own manifest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from kubectl_dr.etcd.restore.nodescript import (
    COMMON,
    HOST_DR,
    HOST_KUBERNETES,
    OTHERS,
    STATIC,
    host_volume,
    in_pod,
)
from kubectl_dr.kube import pods
from kubectl_dr.runs.run import RUN_ID_LABEL

MANIFEST_FILE = "kubectl-dr-etcd-hold.yaml"
POD_NAME = "kubectl-dr-etcd-hold"
KEY_ROOT = "/kubectl-dr/restore"
TOOLS = "/dr-tools"
# Node states in etcd, and the two verdicts.
PARKED, STARTED, DONE, FAILED = "parked", "started", "done", "failed"
RESTORED, ABANDONED = "restored", "abandoned"


def run_prefix(run_id: str) -> str:
    return f"{KEY_ROOT}/{run_id}"


@dataclass(frozen=True)
class NodeHold:
    run_id: str
    node: str
    kubernetes_dir: str  # /etc/kubernetes
    manifests_dir: str  # /etc/kubernetes/manifests
    dr_dir: str  # /var/lib/kubectl-dr/restore
    etcd_servers: str  # the API server's --etcd-servers
    etcd_files: tuple[str, str, str]  # its --etcd-cafile, --etcd-certfile, --etcd-keyfile (node paths)
    readyz_url: str
    hold_timeout: int = 180
    stop_timeout: int = 180
    api_timeout: int = 300

    @property
    def parked_dir(self) -> str:
        return f"{self.kubernetes_dir}/kubectl-dr/{self.run_id}-hold"

    @property
    def status_file(self) -> str:
        return f"{self.dr_dir}/{self.run_id}/status-hold"

    def in_pod(self, host_path: str) -> str:
        return in_pod(host_path, ((self.dr_dir, HOST_DR), (self.kubernetes_dir, HOST_KUBERNETES)))


def script(h: NodeHold) -> str:
    q = shlex.quote
    ca, cert, key = (h.in_pod(f) for f in h.etcd_files)
    values = {
        "MODE": "hold", "RUN": h.run_id, "NODE": h.node, "MANIFESTS": h.in_pod(h.manifests_dir),
        "PARK": h.in_pod(h.parked_dir),
        "STATUS": h.in_pod(h.status_file), "EPS": h.etcd_servers, "CACERT": ca, "CERT": cert, "KEY": key,
        "PREFIX": run_prefix(h.run_id), "READYZ": h.readyz_url, "SELF": MANIFEST_FILE, "OTHERS": " ".join(OTHERS),
        "HOLD_TIMEOUT": str(h.hold_timeout), "STOP_TIMEOUT": str(h.stop_timeout), "API_TIMEOUT": str(h.api_timeout),
    }
    return "".join(f"{k}={q(v)}\n" for k, v in values.items()) + _BODY


_BODY = COMMON + r"""
since() { grep -m 1 "^[0-9]* $1\( \|$\)" "$STATUS" | cut -d ' ' -f 1; }
ctl() {
  ETCDCTL_API=3 etcdctl --endpoints="$EPS" --cacert="$CACERT" --cert="$CERT" --key="$KEY" \
    --dial-timeout=3s --command-timeout=5s "$@"
}
report() { ctl put "$PREFIX/nodes/$NODE" "$1" >/dev/null 2>&1; }
verdict() { ctl get --print-value-only "$PREFIX/verdict" 2>/dev/null | head -n 1; }
# Only while the client has not begun to write: the same transaction shape as its claim, the other way round.
abandon() {
  printf 'create("%s") = "0"\n\nput %s %s\n\n\n' "$PREFIX/applying" "$PREFIX/verdict" abandoned |
    ctl txn --interactive=false >/dev/null 2>&1
}
start_again() {  # VERDICT
  for f in $OTHERS; do unpark "$f"; done
  rmdir "$PARK" "$(dirname "$PARK")" 2>/dev/null
  log started-control-plane "$1"
  report started
  if wait_for "$API_TIMEOUT" api_up; then report done; finish done "$1; the API server is ready"; fi
  report done
  finish done "$1; the API server was not ready within ${API_TIMEOUT}s"
}

# Before the client may claim the run: a refusal puts everything back.
refuse() { for g in $OTHERS; do unpark "$g"; done; report failed; finish failed "$1: nothing was changed"; }
if has done || has failed; then rm -f "$MANIFESTS/$SELF"; exec sleep 3600; fi
if ! has parked; then
  log start "hold on $(hostname)"
  # Called off before this pod even ran (Ctrl-C right after the hand-over): no needless outage.
  if [ "$(verdict)" = abandoned ]; then report done; finish done "abandoned before this node stopped anything"; fi
  [ -e "$MANIFESTS/kube-apiserver.yaml" ] || refuse "no kube-apiserver.yaml in the manifests directory"
  for f in $OTHERS; do park "$f" || refuse "cannot move $f out of the manifests directory"; done
  log parked
else
  log resumed "holding since $(since parked)"
fi
deadline=$(( $(since parked) + HOLD_TIMEOUT ))
# "parked" in etcd only once this node's API server is gone: the client rewrites only when none serves.
if ! has api-stopped; then
  wait_for "$STOP_TIMEOUT" stopped api_up ||
    refuse "the API server still answers ${STOP_TIMEOUT}s after its manifest left"
  log api-stopped
fi
reported=0
while :; do
  [ "$reported" = 1 ] || { report parked && reported=1; }
  v=$(verdict)
  case "$v" in
    restored|abandoned) break ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then abandon; fi
  sleep 1
done
log verdict "$v"
start_again "$v"
"""


def static_pod(h: NodeHold, etcd_image: str, tools_image: str) -> dict[str, Any]:
    pairs = [host_volume("kubernetes", h.kubernetes_dir, HOST_KUBERNETES), host_volume("kubectl-dr", h.dr_dir, HOST_DR)]
    tools = {"name": "tools", "mountPath": TOOLS}
    # Again after a restart of the container (the emptyDir keeps the links, so --install may complain).
    install = (f"{TOOLS}/busybox mkdir -p {TOOLS}/bin; {TOOLS}/busybox --install -s {TOOLS}/bin 2>/dev/null; "
               f"PATH={TOOLS}/bin:/usr/local/bin:$PATH; export PATH\n")
    return pods.pod_manifest(
        POD_NAME, "kube-system", purpose="etcd-hold", labels={RUN_ID_LABEL: h.run_id},
        volumes=[v for v, _ in pairs] + [{"name": "tools", "emptyDir": {}}], **STATIC,
        initContainers=[{
            "name": "tools", "image": tools_image, "imagePullPolicy": "IfNotPresent",
            "command": ["cp", "/bin/busybox", f"{TOOLS}/busybox"], "volumeMounts": [tools],
        }],
        containers=[{
            "name": "hold",
            "image": etcd_image,
            "imagePullPolicy": "IfNotPresent",
            "command": [f"{TOOLS}/busybox", "sh", "-c", install + script(h)],
            "securityContext": {"privileged": True},
            "volumeMounts": [m for _, m in pairs] + [tools],
        }])
