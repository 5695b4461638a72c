"""The script a self-driving static pod runs on each control-plane node, and that pod's manifest.

While every API server is down nobody can exec into a pod, so each node runs the swap on its own and
writes every step to a status file on the node (one line per step: `EPOCH STEP DETAIL`). The same script
does a restore (restored data dir in, current one aside) and a rollback (the kept one in, the restored one
aside): only the two directory names differ.

The commit point, for one node and for three: a node commits only when its new member answers a
linearizable health check (`/health?serializable=false`: it has a leader and a quorum) **and** is connected
to every other member of the new cluster (`etcd_network_active_peers`; a member still on the old data
has the old cluster ID and is refused by its peers, so it never counts). Before that point every failure,
timeout or restart of this pod puts the node back as it was (old data dir, every manifest back): if one
node cannot swap, the others never see all their peers, time out and go back as well, so the old cluster
comes back whole. During that window no API server runs, so the new cluster took no writes that a roll
back could lose. After the commit the node never goes back on its own (`rollback` is a whole-cluster
decision). The narrow case left: a node whose timer ends in the very moment the last peer connects goes
back alone while the others commit; it then reports `rolled-back` and the client says so (the member has
to be replaced), with nothing lost.

The pod is restarted by the kubelet if its process dies (restartPolicy Always): the script reads its own
status file first, resumes after a commit, and otherwise rolls back. Its last act is to remove its own
manifest.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from kubectl_dr.kube import pods
from kubectl_dr.runs.run import RUN_ID_LABEL

MANIFEST_FILE = "kubectl-dr-etcd-restore.yaml"
POD_NAME = "kubectl-dr-etcd-restore"
OTHERS = ("kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml")
ETCD_MANIFEST = "etcd.yaml"
# Mount points inside our pods.
HOST_KUBERNETES = "/host/etc-kubernetes"
HOST_DATA_PARENT = "/host/etcd-parent"
HOST_DR = "/host/kubectl-dr"
# Terminal steps of the status file.
DONE = "done"
ROLLED_BACK = "rolled-back"
COMMITTED = "committed"
FAILED = "failed"  # refused before changing anything
TERMINAL = (DONE, ROLLED_BACK, "rollback-failed", FAILED)


@dataclass(frozen=True)
class NodeSwap:
    """Everything one node's script needs, as paths on the node (host) and URLs it can reach."""

    run_id: str
    mode: str  # "restore" or "rollback"
    node: str
    kubernetes_dir: str  # /etc/kubernetes
    manifests_dir: str  # /etc/kubernetes/manifests
    data_dir: str  # /var/lib/etcd: the member's data dir, where etcd's hostPath points
    incoming: str  # the dir that takes its place
    aside: str  # where the current one goes
    dr_dir: str  # /var/lib/kubectl-dr/restore
    health_url: str  # http://127.0.0.1:2381/health?serializable=false
    metrics_url: str  # http://127.0.0.1:2381/metrics
    peers: int  # the other members of the new cluster
    readyz_url: str  # the local API server's /readyz
    stop_timeout: int = 180
    health_timeout: int = 300
    api_timeout: int = 300
    go_timeout: int = 360  # how long a ready node waits for the client's go (or its call-off)

    @property
    def data_parent(self) -> str:
        return self.data_dir.rsplit("/", 1)[0] or "/"

    @property
    def parked_dir(self) -> str:
        """Where the stopped manifests wait: beside manifests/ (same filesystem, so moves are renames)."""
        return f"{self.kubernetes_dir}/kubectl-dr/{self.run_id}-{self.mode}"

    @property
    def status_file(self) -> str:
        return f"{self.dr_dir}/{self.run_id}/status-{self.mode}"

    @property
    def go_file(self) -> str:
        """Written by the client once every node is ready: from here the nodes change things."""
        return f"{self.dr_dir}/{self.run_id}/go-{self.mode}"

    @property
    def abort_file(self) -> str:
        """Written by the client instead when a node failed before changing anything; it holds the reason."""
        return f"{self.dr_dir}/{self.run_id}/abort-{self.mode}"

    def in_pod(self, host_path: str) -> str:
        """A host path as our pods see it through their three hostPath mounts."""
        return in_pod(host_path, ((self.dr_dir, HOST_DR), (self.kubernetes_dir, HOST_KUBERNETES),
                                  (self.data_parent, HOST_DATA_PARENT)))


def in_pod(host_path: str, mounts: tuple[tuple[str, str], ...]) -> str:
    """A node path inside a pod that mounts (node directory, mount point) pairs."""
    for host, mount in mounts:
        if host_path == host or host_path.startswith(host.rstrip("/") + "/"):
            return mount + host_path[len(host):]
    raise ValueError(f"{host_path} is outside the directories our pods mount")


def script(s: NodeSwap) -> str:
    """The node's sequence in POSIX sh for busybox: mv, wget, sleep, date, grep, tail, rm."""
    q = shlex.quote
    values = {
        "MODE": s.mode, "RUN": s.run_id,
        "MANIFESTS": s.in_pod(s.manifests_dir), "PARK": s.in_pod(s.parked_dir),
        "DATA": s.in_pod(s.data_dir), "INCOMING": s.in_pod(s.incoming), "ASIDE": s.in_pod(s.aside),
        "STATUS": s.in_pod(s.status_file), "HEALTH": s.health_url, "METRICS": s.metrics_url,
        "PEERS": str(s.peers), "READYZ": s.readyz_url, "SELF": MANIFEST_FILE, "OTHERS": " ".join(OTHERS),
        "STOP_TIMEOUT": str(s.stop_timeout), "HEALTH_TIMEOUT": str(s.health_timeout),
        "API_TIMEOUT": str(s.api_timeout), "GO": s.in_pod(s.go_file), "ABORT": s.in_pod(s.abort_file),
        "GO_TIMEOUT": str(s.go_timeout),
    }
    header = "".join(f"{k}={q(v)}\n" for k, v in values.items())
    return header + _BODY


# What both node scripts (this one and holdscript.py's) define first, in busybox sh, with MODE, STATUS,
# MANIFESTS, PARK, SELF and READYZ set: a status file of `EPOCH STEP DETAIL` lines, waits that check five times
# a second, and manifest moves that never leave one manifest in two places.
COMMON = r"""
set -u
mkdir -p "$PARK" "$(dirname "$STATUS")"
log() { echo "$(date +%s) $*" >> "$STATUS"; echo "kubectl-dr $MODE: $*"; }
has() { grep -q "^[0-9]* $1\( \|$\)" "$STATUS" 2>/dev/null; }
api_up() { wget -q -T 3 --no-check-certificate -O /dev/null "$READYZ" 2>/dev/null; }
wait_for() {  # TIMEOUT CHECK...: true once CHECK succeeds within TIMEOUT seconds
  limit=$(( $(date +%s) + $1 )); shift
  while :; do
    "$@" && return 0
    [ "$(date +%s)" -ge "$limit" ] && return 1
    # Local endpoints only: five checks a second cost nothing, and every step ends sooner. How a server is judged
    # stopped does not change with it: `stopped` itself takes three failed probes a second apart. A sleep
    # without fractions fails at once and the wait falls back to whole seconds.
    sleep 0.2 2>/dev/null || sleep 1
  done
}
# A server has stopped only when three probes a second apart all fail: one probe can fail while it still runs
# (its 3 s timeout under load, a restart of its listener), and what follows a stop (moving etcd's data dir,
# rewriting keys) must never happen under a live server. A stopped server refuses at once, so this costs ~2 s.
stopped() { ! "$@" && sleep 1 && ! "$@" && sleep 1 && ! "$@"; }
park() { [ -e "$MANIFESTS/$1" ] || return 0; mv "$MANIFESTS/$1" "$PARK/$1"; }
unpark() {
  [ -e "$PARK/$1" ] || return 0
  if [ -e "$MANIFESTS/$1" ]; then log warning "$1 is in both places; keeping the one in manifests/"; return 0; fi
  mv "$PARK/$1" "$MANIFESTS/$1"
}
finish() {  # STEP DETAIL: the last line, then our own manifest goes, and with it this pod
  log "$@"
  rm -f "$MANIFESTS/$SELF"
  exec sleep 3600
}
"""

_BODY = COMMON + r"""
get() { wget -q -T 3 -O - "$1" 2>/dev/null; }
etcd_up() { get "$HEALTH" >/dev/null || get "${HEALTH%%\?*}" >/dev/null; }
# A member of the new cluster is healthy with a quorum and connected to every other member.
formed() {
  get "$HEALTH" | grep -q '"health":"true"' || return 1
  n=$(get "$METRICS" | grep -c '^etcd_network_active_peers{.*} 1$')
  [ "$n" -ge "$PEERS" ]
}

rollback() {
  log rolling-back "$*"
  if [ -e "$ASIDE" ]; then
    # The swap happened (or half of it): etcd must be stopped before its data dir changes under it.
    park etcd.yaml
    # Never under a live etcd: files it opens by path after the moves would land in the data from before.
    wait_for "$STOP_TIMEOUT" stopped etcd_up || finish rollback-failed "etcd still answers ${STOP_TIMEOUT}s after \
its manifest left: nothing was moved under it ($ASIDE holds the data from before, $DATA the restored data; \
the manifests wait in $PARK)"
    sleep 2
    if [ -e "$DATA" ]; then mv "$DATA" "$INCOMING" || { finish rollback-failed "cannot move $DATA aside"; }; fi
    mv "$ASIDE" "$DATA" || finish rollback-failed "cannot move $ASIDE back to $DATA"
    log restored-data-dir "$DATA"
  fi
  unpark etcd.yaml
  if wait_for "$HEALTH_TIMEOUT" etcd_up; then log etcd-answers; else log warning "etcd does not answer"; fi
  for f in $OTHERS; do unpark "$f"; done
  if wait_for "$API_TIMEOUT" api_up; then finish "rolled-back" "$*"; fi
  finish "rolled-back" "$* (the API server is not ready yet)"
}

after_commit() {
  for f in $OTHERS; do unpark "$f"; done
  log started-control-plane
  if wait_for "$API_TIMEOUT" api_up; then finish done "the API server is ready"; fi
  finish done "the API server did not become ready within ${API_TIMEOUT}s"
}

# A restart of this pod (its process died, the node rebooted) lands here again: resume or undo.
if has done || has rolled-back || has rollback-failed || has failed; then
  rm -f "$MANIFESTS/$SELF"; exec sleep 3600
fi
if has committed; then log resumed "after the commit"; after_commit; fi
if has start; then rollback "this pod restarted before the commit"; fi

log start "$MODE on $(hostname)"
[ -d "$INCOMING" ] || finish failed "the new data dir $INCOMING is missing: nothing was changed"
[ -e "$ASIDE" ] && finish failed "$ASIDE already exists: nothing was changed"
[ -e "$MANIFESTS/etcd.yaml" ] || finish failed "no etcd.yaml in the manifests directory: nothing was changed"
# Every node checks the above first, and waits for the client's word: one node that cannot start calls the run
# off everywhere before any API server stops, instead of leaving the others to their timeouts.
log ready "waiting for every node to be ready"
called() { [ -e "$GO" ] || [ -e "$ABORT" ]; }
wait_for "$GO_TIMEOUT" called ||
  finish failed "no word from kubectl dr within ${GO_TIMEOUT}s of the hand-over: nothing was changed"
[ -e "$ABORT" ] && finish failed "called off: $(head -c 500 "$ABORT"): nothing was changed"
log go
for f in $OTHERS; do park "$f" || rollback "cannot move $f out of the manifests directory"; done
log stopped-control-plane
wait_for "$STOP_TIMEOUT" stopped api_up ||
  rollback "the API server still answers ${STOP_TIMEOUT}s after its manifest left"
park etcd.yaml || rollback "cannot move etcd.yaml out of the manifests directory"
wait_for "$STOP_TIMEOUT" stopped etcd_up || rollback "etcd still answers ${STOP_TIMEOUT}s after its manifest left"
sleep 2
log stopped-etcd
mv "$DATA" "$ASIDE" || rollback "cannot move $DATA to $ASIDE"
mv "$INCOMING" "$DATA" || rollback "cannot move $INCOMING to $DATA"
log swapped "$DATA"
unpark etcd.yaml || rollback "cannot move etcd.yaml back"
log started-etcd
wait_for "$HEALTH_TIMEOUT" formed ||
  rollback "the new member was not healthy with all $PEERS peers within ${HEALTH_TIMEOUT}s"
log healthy
log committed
after_commit
"""


def host_volume(name: str, path: str, mount: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hostPath volume of an existing directory, and its mount."""
    return ({"name": name, "hostPath": {"path": path, "type": "Directory"}}, {"name": name, "mountPath": mount})


def static_pod(s: NodeSwap, image: str) -> dict[str, Any]:
    """The static pod that runs `script(s)`: hostNetwork (etcd's metrics and the API on loopback), the
    three host directories it works on, restarted by the kubelet if it dies (it resumes or undoes)."""
    pairs = [host_volume("kubernetes", s.kubernetes_dir, HOST_KUBERNETES),
             host_volume("etcd-parent", s.data_parent, HOST_DATA_PARENT),
             host_volume("kubectl-dr", s.dr_dir, HOST_DR)]
    return pods.pod_manifest(
        POD_NAME, "kube-system", purpose=f"etcd-{s.mode}", labels={RUN_ID_LABEL: s.run_id},
        volumes=[v for v, _ in pairs], **STATIC,
        containers=[{
            "name": "swap",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script(s)],
            "securityContext": {"privileged": True},
            "volumeMounts": [m for _, m in pairs],
        }])


# What a static pod of ours adds to a helper pod: the kubelet restarts it (it resumes or undoes), it runs
# before anything else on a node short of room, on every node whatever its taints, on the host's network.
STATIC: dict[str, Any] = {"hostNetwork": True, "restartPolicy": "Always", "priorityClassName": "system-node-critical",
                          "tolerations": [{"operator": "Exists"}]}


def parse_status(text: str) -> list[tuple[int, str, str]]:
    """The status file's lines: (epoch seconds, step, detail)."""
    rows = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[0].isdigit():
            rows.append((int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    return rows
