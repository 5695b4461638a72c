"""Rook-Ceph's shape on the loopback cluster, with real Ceph monitors (``up --rook-ceph N``).

Rook's operator makes, for a CephCluster with N mons on host networking, the objects below; we make the
same ones (names, labels, args, env, volumes as Rook v1.15's mon/spec.go writes them) and a real N-mon
quorum of Debian 12's ``ceph-mon`` 16.2.15 on 127.0.0.1, one v2/v1 port pair per mon:

- namespace ``rook-ceph``; Deployment ``rook-ceph-operator`` (image ``rook/ceph``: a stand-in that idles);
- per mon ``a``, ``b``, …: Deployment ``rook-ceph-mon-ID`` (container ``mon`` running ``ceph-mon`` with
  ``--mon-host=$(ROOK_CEPH_MON_HOST)`` from Secret ``rook-ceph-config``, the keyring from Secret
  ``rook-ceph-mons-keyring``, the store on hostPath ``/var/lib/rook/mon-ID/data``), Service ``rook-ceph-mon-ID``;
- ConfigMap ``rook-ceph-mon-endpoints`` (``data``, ``mapping``, ``maxMonId``), ConfigMap
  ``rook-config-override``; Secrets ``rook-ceph-config`` (``mon_host``, ``mon_initial_members``),
  ``rook-ceph-mon`` (``fsid``, ``mon-secret``, ``admin-secret``…), ``rook-ceph-admin-keyring``.

What Rook's operator does in pods of its own (keyrings, the initial monmap, ``--mkfs`` of each store) is done
here on the host before the Deployments exist. Not modelled: reconciliation, OSDs, managers, the mon init
containers (a deleted store makes the mon crash-loop instead of coming back empty), ``--setuser ceph``.

``stop_mon`` takes a mon away as a lost node or disk does (process killed, store moved aside or deleted:
the kubelet's restarts then fail, CrashLoopBackOff); ``start_mon`` puts the store back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.control.layout import Layout
from tests.cluster.control.ports import free_ports

NAMESPACE = "rook-ceph"
CEPH_IMAGE = "quay.io/ceph/ceph:v16.2.15"
ROOK_IMAGE = "docker.io/rook/ceph:v1.15.5"
MON_IDS = "abcdefghijklmnopqrstuvwxyz"
KUBECTL_CANDIDATES = (Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33"), Path("/usr/bin/kubectl"))
ASOK = "/run/ceph/ceph-mon.{id}.asok"


class RookError(Exception):
    pass


@dataclass(frozen=True)
class Mon:
    id: str
    node: str
    v2_port: int
    v1_port: int

    @property
    def addrvec(self) -> str:
        return f"[v2:127.0.0.1:{self.v2_port},v1:127.0.0.1:{self.v1_port}]"

    @property
    def store_host_path(self) -> str:
        return f"/var/lib/rook/mon-{self.id}/data"


def mons_from_state(state: dict[str, Any]) -> list[Mon]:
    return [Mon(**m) for m in state["rook_ceph"]["mons"]]


def _kubectl() -> Path:
    for candidate in KUBECTL_CANDIDATES:
        if candidate.exists():
            return candidate
    raise RookError("kubectl not found")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _keyring_key(keyring: Path) -> str:
    for line in keyring.read_text().splitlines():
        if line.strip().startswith("key ="):
            return line.split("=", 1)[1].strip()
    raise RookError(f"no key in {keyring}")


def _rook_dir(layout: Layout) -> Path:
    return layout.root / "rook-ceph"


def plan(count: int, nodes: list[str]) -> dict[str, Any]:
    if not 1 <= count <= len(MON_IDS):
        raise RookError(f"--rook-ceph wants 1 to {len(MON_IDS)} mons, not {count}")
    ports = free_ports(2 * count)
    mons = [Mon(MON_IDS[i], nodes[i % len(nodes)], ports[2 * i], ports[2 * i + 1]) for i in range(count)]
    return {"fsid": str(uuid.uuid4()), "mons": [m.__dict__ for m in mons]}


def bootstrap(layout: Layout, rook: dict[str, Any]) -> None:
    """Keyrings, the initial monmap and each mon's store (what Rook's operator and init containers do)."""
    work = _rook_dir(layout)
    work.mkdir(parents=True, exist_ok=True)
    mons = [Mon(**m) for m in rook["mons"]]
    fsid = rook["fsid"]
    mon_keyring, admin_keyring = work / "mon.keyring", work / "admin.keyring"

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise RookError(f"{' '.join(args)}: {done.stderr.strip()}")

    run("ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
    run("ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
        "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *")
    # Rook's mon keyring holds both the mon. and client.admin keys (keyring-store/keyring).
    shutil.copy(mon_keyring, work / "keyring")
    run("ceph-authtool", str(work / "keyring"), "--import-keyring", str(admin_keyring))
    monmap = work / "monmap"
    run("monmaptool", "--create", "--fsid", fsid, *(a for m in mons for a in ("--addv", m.id, m.addrvec)),
        str(monmap))
    for m in mons:
        store = layout.host_path(m.node, m.store_host_path)
        store.mkdir(parents=True, exist_ok=True)
        run("ceph-mon", "-c", "/dev/null", "--mkfs", "--id", m.id, "--mon-data", str(store), "--monmap", str(monmap),
            "--keyring", str(work / "keyring"), "--fsid", fsid)


def mon_host(mons: list[Mon]) -> str:
    return ",".join(m.addrvec for m in mons)


def objects(layout: Layout, rook: dict[str, Any]) -> list[dict[str, Any]]:
    work = _rook_dir(layout)
    mons = [Mon(**m) for m in rook["mons"]]
    fsid = rook["fsid"]
    ns = {"namespace": NAMESPACE}
    mon_secret, admin_secret = _keyring_key(work / "mon.keyring"), _keyring_key(work / "admin.keyring")
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "rook-ceph-system", **ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "rook-ceph-default", **ns}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rook-ceph-mon", **ns},
         "type": "kubernetes.io/rook",
         "data": {"fsid": _b64(fsid), "mon-secret": _b64(mon_secret), "admin-secret": _b64(admin_secret),
                  "ceph-username": _b64("client.admin"), "ceph-secret": _b64(admin_secret)}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rook-ceph-mons-keyring", **ns},
         "type": "kubernetes.io/rook", "data": {"keyring": _b64((work / "keyring").read_text())}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rook-ceph-admin-keyring", **ns},
         "type": "kubernetes.io/rook", "data": {"keyring": _b64((work / "admin.keyring").read_text())}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rook-ceph-config", **ns},
         "type": "kubernetes.io/rook",
         "data": {"mon_host": _b64(mon_host(mons)), "mon_initial_members": _b64(",".join(m.id for m in mons))}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rook-ceph-mon-endpoints", **ns},
         "data": {"data": ",".join(f"{m.id}=127.0.0.1:{m.v1_port}" for m in mons),
                  "mapping": json.dumps({"node": {m.id: {"Name": m.node, "Hostname": m.node, "Address": "127.0.0.1"}
                                                  for m in mons}}),
                  "maxMonId": str(len(mons) - 1), "outOfQuorum": ""}},
        # Rook's own place for ceph.conf settings. The mons' stores sit on the test machine's shared disk, not on a
        # disk of their own: below 5 % free there (a busy CI disk) ceph-mon refuses to start at all, and the
        # cluster never forms a quorum. An admin in that spot sets the same override.
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rook-config-override", **ns},
         "data": {"config": "[global]\nmon_data_avail_crit = 0\n"}},
        _operator(),
    ]
    for m in mons:
        out.append(mon_deployment(m, fsid))
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"rook-ceph-mon-{m.id}", **ns,
                                                                         "labels": _mon_labels(m.id)},
                    "spec": {"selector": _mon_selector(m.id),
                             "ports": [{"name": "tcp-msgr1", "port": 6789, "targetPort": m.v1_port, "protocol": "TCP"},
                                       {"name": "tcp-msgr2", "port": 3300, "targetPort": m.v2_port,
                                        "protocol": "TCP"}]}})
    return out


def _operator() -> dict[str, Any]:
    labels = {"app": "rook-ceph-operator"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "rook-ceph-operator", "namespace": NAMESPACE,
                         "labels": {**labels, "operator": "rook", "storage-backend": "ceph"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"serviceAccountName": "rook-ceph-system",
                                           "containers": [{"name": "rook-ceph-operator", "image": ROOK_IMAGE,
                                                           "args": ["ceph", "operator"],
                                                           "env": [{"name": "ROOK_CURRENT_NAMESPACE_ONLY",
                                                                    "value": "false"}]}]}}}}


def _mon_selector(mon_id: str) -> dict[str, str]:
    return {"app": "rook-ceph-mon", "ceph_daemon_id": mon_id, "mon": mon_id, "mon_cluster": NAMESPACE,
            "rook_cluster": NAMESPACE}


def _mon_labels(mon_id: str) -> dict[str, str]:
    return {**_mon_selector(mon_id), "ceph_daemon_type": "mon", "app.kubernetes.io/name": "ceph-mon",
            "app.kubernetes.io/instance": mon_id, "app.kubernetes.io/component": "cephclusters.ceph.rook.io",
            "app.kubernetes.io/part-of": NAMESPACE, "app.kubernetes.io/managed-by": "rook-ceph-operator",
            "app.kubernetes.io/created-by": "rook-ceph-operator", "rook.io/operator-namespace": NAMESPACE}


def mon_deployment(m: Mon, fsid: str) -> dict[str, Any]:
    labels = _mon_labels(m.id)
    data_dir = f"/var/lib/ceph/mon/ceph-{m.id}"
    args = [f"--fsid={fsid}", "--keyring=/etc/ceph/keyring-store/keyring", "--default-log-to-stderr=true",
            "--default-err-to-stderr=true", "--default-mon-cluster-log-to-stderr=true",
            "--default-log-stderr-prefix=debug ", "--default-log-to-file=false",
            "--default-mon-cluster-log-to-file=false", "--mon-host=$(ROOK_CEPH_MON_HOST)",
            "--mon-initial-members=$(ROOK_CEPH_MON_INITIAL_MEMBERS)", f"--id={m.id}", "--foreground",
            # Rook gives --public-addr=IP (default ports 3300/6789); the loopback's mons share one address,
            # so each names its own port pair.
            f"--public-addrv={m.addrvec}", f"--setuser-match-path={data_dir}/store.db"]
    env = [{"name": "CONTAINER_IMAGE", "value": CEPH_IMAGE},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "ROOK_CEPH_MON_HOST", "valueFrom": {"secretKeyRef": {"name": "rook-ceph-config",
                                                                          "key": "mon_host"}}},
           {"name": "ROOK_CEPH_MON_INITIAL_MEMBERS",
            "valueFrom": {"secretKeyRef": {"name": "rook-ceph-config", "key": "mon_initial_members"}}},
           {"name": "ROOK_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"rook-ceph-mon-{m.id}", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": _mon_selector(m.id)}, "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"name": f"rook-ceph-mon-{m.id}", "labels": labels},
                "spec": {
                    "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
                    "nodeSelector": {"kubernetes.io/hostname": m.node},
                    "serviceAccountName": "rook-ceph-default", "restartPolicy": "Always",
                    "containers": [{
                        "name": "mon", "image": CEPH_IMAGE, "command": ["ceph-mon"], "args": args, "env": env,
                        "ports": [{"name": "tcp-msgr1", "containerPort": m.v1_port, "protocol": "TCP"},
                                  {"name": "tcp-msgr2", "containerPort": m.v2_port, "protocol": "TCP"}],
                        "volumeMounts": [
                            {"name": "rook-config-override", "mountPath": "/etc/ceph", "readOnly": True},
                            {"name": "rook-ceph-mons-keyring", "mountPath": "/etc/ceph/keyring-store/",
                             "readOnly": True},
                            {"name": "rook-ceph-log", "mountPath": "/var/log/ceph"},
                            {"name": "rook-ceph-crash", "mountPath": "/var/lib/ceph/crash"},
                            {"name": "ceph-daemon-data", "mountPath": data_dir}],
                    }],
                    "volumes": [
                        {"name": "rook-config-override", "projected": {"sources": [{"configMap": {
                            "name": "rook-config-override",
                            "items": [{"key": "config", "path": "ceph.conf", "mode": 0o444}]}}]}},
                        {"name": "rook-ceph-mons-keyring", "secret": {"secretName": "rook-ceph-mons-keyring"}},
                        {"name": "rook-ceph-log", "hostPath": {"path": "/var/lib/rook/rook-ceph/log"}},
                        {"name": "rook-ceph-crash", "hostPath": {"path": "/var/lib/rook/rook-ceph/crash"}},
                        {"name": "ceph-daemon-data", "hostPath": {"path": m.store_host_path}}],
                },
            },
        },
    }


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(_kubectl()), "--kubeconfig", str(layout.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RookError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def deploy(layout: Layout, rook: dict[str, Any], timeout: float = 180.0) -> None:
    bootstrap(layout, rook)
    # The server checks every object against the real schemas itself (strict field validation).
    kubectl(layout, "create", "--validate=false", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": objects(layout, rook)}))
    wait_quorum(layout, rook, [m["id"] for m in rook["mons"]], timeout)


def mon_pid(rook: dict[str, Any], mon_id: str) -> int | None:
    """The running ceph-mon of this cluster and mon id, found by its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (argv and argv[0].endswith(b"ceph-mon") and f"--id={mon_id}".encode() in argv
                and f"--fsid={rook['fsid']}".encode() in argv
                and not any(a.startswith((b"--extract-monmap", b"--inject-monmap")) for a in argv)):
            return int(entry.name)
    return None


def mon_status(rook: dict[str, Any], mon_id: str) -> dict[str, Any] | None:
    """``mon_status`` through the mon's admin socket (inside its sandbox), or None when it does not answer."""
    pid = mon_pid(rook, mon_id)
    if pid is None:
        return None
    done = subprocess.run(["ceph", "--admin-daemon", f"/proc/{pid}/root{ASOK.format(id=mon_id)}", "mon_status"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def wait_quorum(layout: Layout, rook: dict[str, Any], members: list[str], timeout: float) -> None:
    """Until every mon in ``members`` reports a quorum of exactly those mons."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ok = True
        for mon_id in members:
            status = mon_status(rook, mon_id)
            last[mon_id] = status and {k: status.get(k) for k in ("state", "quorum", "election_epoch")}
            if not status or sorted(status["monmap"]["mons"][r]["name"] for r in status.get("quorum", [])) \
                    != sorted(members):
                ok = False
        if ok:
            return
        time.sleep(1.0)
    raise RookError(f"the mons {members} did not form a quorum within {timeout:.0f}s: {last}")


def _parked(layout: Layout, mon_id: str) -> Path:
    return _rook_dir(layout) / "parked" / f"mon-{mon_id}"


def stop_mon(layout: Layout, rook: dict[str, Any], mon_id: str, delete_store: bool = False,
             timeout: float = 30.0) -> None:
    """The mon is gone as with a lost node or disk: store moved aside (or deleted), process killed. The
    kubelet's restarts fail on the empty data dir (CrashLoopBackOff) until ``start_mon``."""
    m = _mon(rook, mon_id)
    store = layout.host_path(m.node, m.store_host_path)
    parked = _parked(layout, mon_id)
    if delete_store:
        shutil.rmtree(parked, ignore_errors=True)
        if store.exists():
            shutil.rmtree(store)
    elif store.exists() and any(store.iterdir()):
        if parked.exists():
            raise RookError(f"mon {mon_id} already has a parked store in {parked}")
        parked.parent.mkdir(parents=True, exist_ok=True)
        store.rename(parked)
    store.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while (pid := mon_pid(rook, mon_id)) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RookError(f"mon {mon_id} (pid {pid}) did not stop")
        time.sleep(0.2)


def start_mon(layout: Layout, rook: dict[str, Any], mon_id: str, timeout: float = 90.0) -> None:
    """Put a parked store back and restart the mon's pod (rather than wait out the crash-loop back-off)."""
    m = _mon(rook, mon_id)
    store = layout.host_path(m.node, m.store_host_path)
    parked = _parked(layout, mon_id)
    if not parked.exists():
        raise RookError(f"mon {mon_id} has no parked store (stopped with --delete-store, or never stopped)")
    if store.exists():
        if any(store.iterdir()):
            raise RookError(f"mon {mon_id} has a store again; not replacing it with the parked one")
        store.rmdir()
    parked.rename(store)
    kubectl(layout, "-n", NAMESPACE, "delete", "pod", "-l", f"mon={mon_id}", "--wait=false")
    deadline = time.monotonic() + timeout
    while mon_pid(rook, mon_id) is None:
        if time.monotonic() > deadline:
            raise RookError(f"mon {mon_id} did not start within {timeout:.0f}s")
        time.sleep(0.5)


def _mon(rook: dict[str, Any], mon_id: str) -> Mon:
    for m in rook["mons"]:
        if m["id"] == mon_id:
            return Mon(**m)
    raise RookError(f"no mon {mon_id!r} (mons: {', '.join(m['id'] for m in rook['mons'])})")


def store_digest(path: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file under a store directory (to compare stores exactly)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

