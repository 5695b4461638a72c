"""The break-glass runbook: the same restore as exact shell commands per node, for when kubectl dr cannot
reach the cluster (no API server, no working kubeconfig). Written for a person with root on each node."""

from __future__ import annotations

import shlex

from kubectl_dr.etcd.restore import holdscript
from kubectl_dr.etcd.restore.external import ExternalPlan
from kubectl_dr.etcd.restore.holdscript import run_prefix
from kubectl_dr.etcd.restore.job import BUMP, Plan
from kubectl_dr.etcd.restore.nodescript import OTHERS
from kubectl_dr.etcd.restore.source import minor_of
from kubectl_dr.etcd.restore.targets import DR_DIR, MANIFESTS_DIR


def restore_tool(cluster_version: str) -> tuple[str, str]:
    """The command that restores a snapshot on a node of this etcd version, and what the node needs for it.
    etcd 3.4 has no etcdutl (its etcdctl restores, with the v3 API); 3.5 has both and deprecates the etcdctl way."""
    if minor_of(cluster_version) in ("3.3", "3.4"):
        return "ETCDCTL_API=3 etcdctl", f"etcdctl of etcd {minor_of(cluster_version)}"
    return "etcdutl", "etcdutl of the cluster's etcd minor (or etcdctl 3.5.x)"


def runbook(p: Plan) -> str:
    assert p.snapshot is not None
    tool, needs = restore_tool(p.cluster_version)
    snap = f"{DR_DIR}/{p.run.id}/snapshot.db"
    park = f"/etc/kubernetes/kubectl-dr/{p.run.id}-manual"
    q = shlex.quote
    lines = [
        f"# Break-glass runbook for etcd restore {p.run.id} (kubectl dr), {len(p.targets)} control-plane node(s).",
        f"# Snapshot: {p.snapshot.describe()}, SHA-256 {p.snapshot.status.sha256}, revision "
        f"{p.snapshot.status.revision}, etcd {p.snapshot.version or 'unknown'}.",
        "# Run each block as root on the node it names, in order: all nodes finish a step before the next.",
        f"# Needs on each node: {needs} in PATH, sha256sum, mv.",
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
                  f"{tool} snapshot restore {snap} --name {q(t.name)} --data-dir {q(new)} "
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


def external_runbook(p: ExternalPlan) -> str:
    """For a restore through the client API: how to release the held API servers by hand."""
    base = run_prefix(p.run.id)
    ctl = f"ETCDCTL_API=3 etcdctl --endpoints={','.join(p.direct.endpoints)} --cacert=CA --cert=CERT --key=KEY"
    hold = p.nodes[0].hold(p.run.id, p.hold_timeout) if p.nodes else None
    lines = [
        f"# Break-glass runbook for etcd restore {p.run.id} (kubectl dr), external etcd {p.cluster_id}.",
        f"# Snapshot: {p.snapshot.describe()}, SHA-256 {p.snapshot.status.sha256}, revision "
        f"{p.snapshot.status.revision}. Keys under {p.prefix}/ are rewritten through the etcd API.",
        f"# A static pod ({holdscript.MANIFEST_FILE}) on each control-plane node holds the API server down until",
        f"# {base}/verdict exists in etcd. Where things stand: {ctl} get --prefix {base}/",
        "",
        "## The rewrite had not begun (no .../applying key): let the API servers start on the untouched data.",
        f"{ctl} put {base}/verdict abandoned",
        "",
        "## The rewrite began (.../applying exists): finish it, or go back, from any machine that reaches etcd:",
        f"kubectl dr etcd restore --from {p.snapshot.backup_id or p.snapshot.path} --endpoints "
        f"{','.join(p.direct.endpoints)} --cacert CA --cert CERT --key KEY      # finishes this restore",
        "kubectl dr etcd restore --from SAFETY-SNAPSHOT-ID --endpoints ... (same flags)   # or puts the old data back",
        "",
        "## If the hold pods are gone as well, on every control-plane node:",
    ]
    for n in p.nodes:
        h = n.hold(p.run.id, p.hold_timeout)
        lines += [f"# on {n.node}:",
                  f"mv {h.parked_dir}/*.yaml {MANIFESTS_DIR}/ && rm -f {MANIFESTS_DIR}/{holdscript.MANIFEST_FILE}"]
    if hold is not None:
        lines += ["", f"# Status files: {hold.status_file} on each node."]
    return "\n".join(lines) + "\n"
