"""The break-glass runbook: the same restore as exact shell commands per node, for when kubectl dr cannot
reach the cluster (no API server, no working kubeconfig). Written for a person with root on each node."""

from __future__ import annotations

import shlex

from kubectl_dr.etcd.restore.job import BUMP, DR_DIR, Plan
from kubectl_dr.etcd.restore.nodescript import OTHERS
from kubectl_dr.etcd.restore.targets import MANIFESTS_DIR


def runbook(p: Plan) -> str:
    assert p.snapshot is not None
    snap = f"{DR_DIR}/{p.run.id}/snapshot.db"
    park = f"/etc/kubernetes/kubectl-dr/{p.run.id}-manual"
    q = shlex.quote
    lines = [
        f"# Break-glass runbook for etcd restore {p.run.id} (kubectl dr), {len(p.targets)} control-plane node(s).",
        f"# Snapshot: {p.snapshot.describe()}, SHA-256 {p.snapshot.status.sha256}, revision "
        f"{p.snapshot.status.revision}, etcd {p.snapshot.version or 'unknown'}.",
        "# Run each block as root on the node it names, in order: all nodes finish a step before the next.",
        "# Needs on each node: etcdutl of the cluster's etcd minor (or etcdctl 3.5.x) in PATH, sha256sum, mv.",
        "",
        "## 1. Copy the snapshot to every node and check it (the digest must match exactly).",
    ]
    for t in p.targets:
        lines += [f"# on {t.node}:", f"mkdir -p {DR_DIR}/{p.run.id} && scp SNAPSHOT-FILE {t.node}:{snap}",
                  f"echo '{p.snapshot.status.sha256}  {snap}' | sha256sum -c -"]
    lines += ["", "## 2. On every node: stop the API server, controller-manager and scheduler, then etcd."]
    for t in p.targets:
        lines += [f"# on {t.node}:", f"mkdir -p {park}"]
        lines += [f"mv {MANIFESTS_DIR}/{f} {park}/" for f in OTHERS]
    lines += ["# then, once no API server answers any more, on every node:"]
    for t in p.targets:
        lines += [f"# on {t.node}:", f"mv {MANIFESTS_DIR}/etcd.yaml {park}/",
                  "# wait until etcd has stopped: `crictl ps --name etcd` lists nothing"]
    lines += ["", "## 3. On every node: restore the same snapshot into a new data dir and swap it in."]
    for t in p.targets:
        new = f"{t.data_dir}.restored-{p.run.id}"
        bump = f" --bump-revision {BUMP} --mark-compacted" if p.bump else ""
        lines += [f"# on {t.node}:",
                  f"etcdutl snapshot restore {snap} --name {q(t.name)} --data-dir {q(new)} "
                  f"--initial-cluster {q(p.initial_cluster)} --initial-cluster-token {q(p.token)} "
                  f"--initial-advertise-peer-urls {q(','.join(t.peer_urls))}{bump}",
                  f"chmod 700 {q(new)}",
                  f"mv {q(t.data_dir)} {q(t.data_dir + '.before-' + p.run.id)} && mv {q(new)} {q(t.data_dir)}"]
    lines += ["", "## 4. etcd back on every node, then check the new cluster."]
    for t in p.targets:
        lines += [f"# on {t.node}:", f"mv {park}/etcd.yaml {MANIFESTS_DIR}/",
                  f"curl -s {t.metrics_url}/health?serializable=false   # {{\"health\":\"true\"...}} once all are up"]
    lines += ["", "## 5. On every node: the API server and the rest back, then restart the kubelet."]
    for t in p.targets:
        lines += [f"# on {t.node}:"] + [f"mv {park}/{f} {MANIFESTS_DIR}/" for f in OTHERS]
        lines += ["systemctl restart kubelet"]
    lines += ["", "## Undo (before anything wrote to the new cluster): the same steps 2, 4 and 5 with, on each node:"]
    for t in p.targets:
        lines += [f"# on {t.node}:",
                  f"mv {q(t.data_dir)} {q(t.data_dir + '.restored-' + p.run.id)} && "
                  f"mv {q(t.data_dir + '.before-' + p.run.id)} {q(t.data_dir)}"]
    lines += ["", f"# Status files of the automatic run: {DR_DIR}/{p.run.id}/status-restore on each node."]
    return "\n".join(lines) + "\n"
