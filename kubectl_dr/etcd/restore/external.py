"""`kubectl dr etcd restore --endpoints …`: restore an external etcd through its client API.

An external etcd runs on hosts that are not nodes of the cluster: no pod reaches its data dirs, so the
data-dir swap of job.py is impossible. What is reachable is etcd's API (from this machine, with the
client certificate) and the control-plane nodes (through pods). So:

1. Preflight: the API servers from their static pods (their --etcd-servers, --etcd-prefix and etcd client
   files); every given endpoint answers, all of one cluster, of the snapshot's etcd major.minor; and this
   etcd is the cluster's storage (it holds the kube-system namespace with the UID the API reports), so a
   mistyped endpoint cannot rewrite another cluster.
2. A safety snapshot of the live etcd into the repository: the way back (`--from` it).
3. On every control-plane node a static pod (holdscript.py) stops the API server, controller-manager and
   scheduler and holds them down. The client and the nodes meet in etcd, under /kubectl-dr/restore/RUN/.
4. Once every node holds, the client claims the run, rewrites the keys under the prefix to the snapshot's
   (rewrite.py: only what differs, revision forward), checks the result key by key (SHA-256 over all keys
   and values), and gives the verdict; the nodes start their API servers again.

Interrupted before the claim: the nodes give up after their hold timeout and start again on untouched data
(a Ctrl-C tells them at once). Interrupted after it: the API servers stay down until a run finishes the
rewrite: the same command again (it finds the held run in etcd, needs no API server), or `--from` the
safety snapshot to go back.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr import cleanup
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.etcd import encryption, keyspace
from kubectl_dr.etcd import snapshot as etcd_snapshot
from kubectl_dr.etcd.client import Endpoint, certificate_hint, is_rpc_error, rpc_error_text
from kubectl_dr.etcd.errors import EtcdError
from kubectl_dr.etcd.keyspace import Keyspace
from kubectl_dr.etcd.restore import holdscript
from kubectl_dr.etcd.restore.common import (
    Outcome,
    check_snapshot,
    compare_with_before,
    count_objects,
    names,
    remove_restored_helpers,
    wait_api,
)
from kubectl_dr.etcd.restore.holdscript import ABANDONED, DONE, PARKED, RESTORED, NodeHold, run_prefix
from kubectl_dr.etcd.restore.nodescript import HOST_DR, HOST_KUBERNETES
from kubectl_dr.etcd.restore.options import RestoreOptions
from kubectl_dr.etcd.restore.rewrite import Changes, differences, digest, live, prefix_end, rewrite
from kubectl_dr.etcd.restore.source import LocalSnapshot, minor_of
from kubectl_dr.etcd.restore.targets import (
    APISERVER_SELECTOR,
    DR_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    host_path_of,
    readyz,
)
from kubectl_dr.etcd.topology import ETCD_NAMESPACE, Direct, parse_flags
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import Timeouts, bounded_input, open_exec
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.kube.pods import HelperPod, pod_name
from kubectl_dr.pauses import pauses
from kubectl_dr.repo import Repository
from kubectl_dr.runs import Run
from kubectl_dr.runs.run import Holder
from kubectl_dr.session import Session

DEFAULT_PREFIX = "/registry"
PARK_WAIT_MARGIN = 30  # the client stops waiting for the nodes this long before they stop waiting for it


@dataclass(frozen=True)
class ApiNode:
    node: str
    etcd_servers: str
    etcd_files: tuple[str, str, str]  # CA, certificate, key: paths on the node
    prefix: str
    readyz_url: str

    def hold(self, run_id: str, hold_timeout: int) -> NodeHold:
        return NodeHold(run_id=run_id, node=self.node, kubernetes_dir=KUBERNETES_DIR, manifests_dir=MANIFESTS_DIR,
                        dr_dir=DR_DIR, etcd_servers=self.etcd_servers, etcd_files=self.etcd_files,
                        readyz_url=self.readyz_url, hold_timeout=hold_timeout)


def api_nodes(kube: Kube) -> list[ApiNode]:
    """Every kube-apiserver static pod: where its etcd is, and the files it reaches etcd with."""
    items = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=APISERVER_SELECTOR).get("items") or []
    found = []
    for pod in items:
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        containers = (pod.get("spec") or {}).get("containers") or []
        if not node or not containers:
            continue
        container = next((c for c in containers if c.get("name") == "kube-apiserver"), containers[0])
        flags = parse_flags(list(container.get("command") or []) + list(container.get("args") or []))
        where = f"pod {ETCD_NAMESPACE}/{pod['metadata']['name']}"
        servers = flags.get("etcd-servers", "")
        if not servers:
            raise EtcdError(f"{where} has no --etcd-servers: cannot tell where its storage is")
        files = []
        for flag in ("etcd-cafile", "etcd-certfile", "etcd-keyfile"):
            path = flags.get(flag)
            host = host_path_of(pod, container, path) if path else None
            if host is None or not (host + "/").startswith(KUBERNETES_DIR + "/"):
                raise EtcdError(f"{where}: --{flag} {path or '(not set)'} is not a file under {KUBERNETES_DIR} on "
                                "the node",
                                hint="The pod that holds the API server down reaches etcd with the API server's own "
                                     f"client certificate, which it reads from {KUBERNETES_DIR} (kubeadm's layout).")
            files.append(host)
        found.append(ApiNode(node, servers, (files[0], files[1], files[2]),
                             flags.get("etcd-prefix", DEFAULT_PREFIX).rstrip("/") or DEFAULT_PREFIX,
                             readyz(pod, node)))
    if not found:
        raise EtcdError(f"no kube-apiserver static pods in {ETCD_NAMESPACE} ({APISERVER_SELECTOR})",
                        hint="kubectl dr restores etcd for kubeadm-style control planes, whose API servers run as "
                             "static pods.")
    prefixes = {n.prefix for n in found}
    if len(prefixes) > 1:
        raise EtcdError(f"the API servers use different --etcd-prefix values ({', '.join(sorted(prefixes))})")
    return sorted(found, key=lambda n: n.node)


# ------------------------------------------------------------------------------------------------- etcd side
class Etcd:
    """The given endpoints: every one must answer, all of one cluster; requests go to the first."""

    def __init__(self, direct: Direct) -> None:
        self.direct = direct
        self.endpoints: list[Endpoint] = []
        try:
            for url in direct.endpoints:
                self.endpoints.append(Endpoint(url, direct))
        except BaseException:
            self.close()
            raise

    @property
    def ep(self) -> Endpoint:
        return self.endpoints[0]

    def close(self) -> None:
        for e in self.endpoints:
            e.close()

    def __enter__(self) -> Etcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> tuple[str, str, int]:
        """(etcd version, cluster ID, revision); raises unless every endpoint answers as one cluster."""
        infos, clusters = [], set()
        for e in self.endpoints:
            try:
                infos.append(e.status())
                clusters.add(e.members()[0])
            except Exception as exc:
                if not is_rpc_error(exc):
                    raise
                text = rpc_error_text(exc)
                raise EtcdError(f"etcd at {e.url} does not answer: {text}",
                                hint=(certificate_hint(text) or
                                      "Every given member must answer (the rewrite goes through the first). A "
                                      "member that is down can be left out of --endpoints: the rewrite needs only "
                                      "a quorum, and the member catches up when it is back.")) from None
        if len(clusters) > 1:
            raise EtcdError(f"the endpoints belong to different etcd clusters ({', '.join(sorted(clusters))})")
        versions = sorted({i.version or "unknown" for i in infos})
        if len({minor_of(v) for v in versions}) != 1:
            raise EtcdError(f"the members run different etcd versions ({', '.join(versions)}): finish the upgrade "
                            "first")
        return versions[0], clusters.pop(), max(i.revision or 0 for i in infos)

    def get(self, key: bytes) -> bytes | None:
        resp = self.ep.client.kvstub.Range(self.ep.rpc.RangeRequest(key=key), 5.0)
        return bytes(resp.kvs[0].value) if resp.kvs else None

    def put(self, key: bytes, value: bytes) -> None:
        self.ep.client.kvstub.Put(self.ep.rpc.PutRequest(key=key, value=value), 5.0)

    def put_if_absent(self, absent: bytes, key: bytes, value: bytes) -> bool:
        """Put key=value only if `absent` was never created; the one transaction the nodes race with."""
        rpc = self.ep.rpc
        compare = rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=absent, create_revision=0)
        resp = self.ep.client.kvstub.Txn(rpc.TxnRequest(
            compare=[compare], success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))], failure=[]),
            5.0)
        return bool(resp.succeeded)

    def under(self, prefix: bytes) -> dict[bytes, bytes]:
        return {k: v.data for k, v in live(self.ep, prefix).items()}

    def delete_prefix(self, prefix: bytes) -> None:
        rpc = self.ep.rpc
        self.ep.client.kvstub.DeleteRange(rpc.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix)), 5.0)


@contextlib.contextmanager
def etcd_errors(direct: Direct) -> Iterator[None]:
    """gRPC failures in etcd's words, with what to check; anything else passes through."""
    try:
        yield
    except Exception as exc:
        if not is_rpc_error(exc):
            raise
        text = rpc_error_text(exc)
        raise EtcdError(f"etcd at {', '.join(direct.endpoints)}: {text}", hint=certificate_hint(text) or
                        "Check that --endpoints reach the etcd members from this machine.") from None


def held_runs(etcd: Etcd) -> list[str]:
    """Runs that claimed the rewrite and gave no verdict: their nodes hold the API servers down."""
    keys = etcd.under(holdscript.KEY_ROOT.encode() + b"/")
    runs = {k.decode().split("/")[3] for k in keys if k.count(b"/") >= 4}
    return sorted(r for r in runs if f"{run_prefix(r)}/applying".encode() in keys
                  and f"{run_prefix(r)}/verdict".encode() not in keys)


def held_cluster_uid(etcd: Etcd) -> str | None:
    """The cluster whose API servers a held run keeps down, from etcd itself (its kube-system under the run's
    prefix): with no API server to ask, this is what `--from latest` resolves against. None without a held run."""
    held = held_runs(etcd)
    if not held:
        return None
    prefix = (etcd.get(f"{run_prefix(held[0])}/prefix".encode()) or b"/registry").decode()
    stored = etcd.get(f"{prefix}/namespaces/kube-system".encode())
    return keyspace.namespace_uid(stored) if stored else None


def run_record(etcd: Etcd, run_id: str) -> dict[str, Any]:
    """What a run wrote about itself in etcd: who runs it, with which snapshot, its safety snapshot once saved.
    Empty for a run of a version that wrote none."""
    base = run_prefix(run_id)
    try:
        record = json.loads(etcd.get(f"{base}/record".encode()) or b"{}")
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    safety = etcd.get(f"{base}/safety".encode())
    if safety:
        record["safety"] = safety.decode()
    return record


def _record(p: ExternalPlan) -> bytes:
    return json.dumps({"runID": p.run.id, "holder": p.run.holder, "command": p.run.command,
                       "snapshot": {"backupID": p.snapshot.backup_id, "path": str(p.snapshot.path),
                                    "sha256": p.snapshot.status.sha256}}).encode()


def _snapshot_words(snapshot: dict[str, Any]) -> str:
    what = f"backup {snapshot['backupID']}" if snapshot.get("backupID") else f"file {snapshot.get('path')}"
    return f"{what} (SHA-256 {str(snapshot.get('sha256'))[:16]}…)"


def check_bound(etcd: Etcd, run_id: str, snapshot: LocalSnapshot, source: str) -> None:
    """A held run is finished with the snapshot it started with, or undone with its own safety snapshot named by
    its ID; anything else (`latest` finds the safety snapshot: it is the newest backup now) would release the API
    servers with nothing restored, or with another restore than the one begun."""
    record = run_record(etcd, run_id)
    held = record.get("snapshot") or {}
    if not held.get("sha256") or held["sha256"] == snapshot.status.sha256:
        return  # the same snapshot (or a run that recorded none: nothing to compare with)
    safety = snapshot.details.get("safetySnapshotOf") == run_id
    if safety and source != "latest":
        return
    given = _snapshot_words({"backupID": snapshot.backup_id, "path": str(snapshot.path),
                             "sha256": snapshot.status.sha256})
    back = record.get("safety") or ("this one" if safety else None)
    raise EtcdError(
        f"run {run_id} holds the API servers down with its rewrite to {_snapshot_words(held)} unfinished, and "
        f"--from {source} is {given}" + (", the run's own safety snapshot" if safety else ", another snapshot")
        + ": a held run is finished only with the snapshot it began with",
        hint=f"Pass --from {held.get('backupID') or held.get('path')} to finish that restore"
             + (f", or --from {back} (by its ID) to put back the data from before it" if back else "") + ".")


def refuse_snapshot_while_held(direct: Direct) -> None:
    """`etcd snapshot --endpoints` while a restore holds the API servers down with its rewrite unfinished: the
    snapshot would save a half-rewritten keyspace, and be the newest backup `--from latest` picks next."""
    try:
        with Etcd(direct) as etcd:
            held = held_runs(etcd)
            record = run_record(etcd, held[0]) if held else {}
    except Exception as exc:
        if is_rpc_error(exc) or isinstance(exc, DrError):
            return  # not answering, or not reachable so: the snapshot itself says why, per endpoint
        raise
    if not held:
        return
    who = Holder.parse(str(record.get("holder") or ""))
    holder = f" on host {who.host} (pid {who.pid}), `{record['command']}`" if record.get("holder") else ""
    raise EtcdError(f"an etcd restore holds the API servers down with its rewrite unfinished: run {held[0]}{holder}; "
                    "a snapshot now would save a half-restored keyspace",
                    hint=f"Its state: `etcdctl get --prefix {run_prefix(held[0])}/` (or `kubectl dr etcd restore "
                         f"status` once the API servers are back). Finish it first with its own command: "
                         f"`{_its_command(record)}`. Nothing was changed.")


def _its_command(record: dict[str, Any]) -> str:
    """The held run's command line as its user typed it (recorded with the run), else its shape."""
    command = str(record.get("command") or "")
    return f"kubectl dr {command}" if command.startswith("etcd restore") else SAME_COMMAND


def finished_runs(etcd: Etcd) -> list[str]:
    """Runs whose keys are left over: not held (a verdict, or never claimed)."""
    keys = etcd.under(holdscript.KEY_ROOT.encode() + b"/")
    runs = {k.decode().split("/")[3] for k in keys if k.count(b"/") >= 4}
    return sorted(runs - set(held_runs(etcd)))


# ---------------------------------------------------------------------------------------------------- plan
@dataclass
class ExternalPlan:
    run: Run
    direct: Direct
    snapshot: LocalSnapshot
    space: Keyspace
    nodes: list[ApiNode]
    prefix: str
    cluster_version: str
    cluster_id: str
    revision_before: int
    to_put: int
    to_delete: int
    unchanged: int
    etcd_image: str
    helper_image: str
    namespace: str
    hold_timeout: int
    counts_before: dict[str, int] = field(default_factory=dict)
    nodes_before: list[str] = field(default_factory=list)
    pods_before: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "EtcdRestorePlan", "mode": "external", "runID": self.run.id,
            "endpoints": list(self.direct.endpoints), "clusterID": self.cluster_id,
            "etcdVersion": self.cluster_version, "prefix": self.prefix, "revisionBefore": self.revision_before,
            "snapshot": {"backupID": self.snapshot.backup_id, "path": str(self.snapshot.path),
                         "sha256": self.snapshot.status.sha256, "revision": self.snapshot.status.revision,
                         "etcdVersion": self.snapshot.version},
            "keys": {"put": self.to_put, "delete": self.to_delete, "unchanged": self.unchanged},
            "controlPlaneNodes": [n.node for n in self.nodes], "etcdImage": self.etcd_image,
            "steps": self.steps(),
        }

    def steps(self) -> list[str]:
        return [f"save a safety snapshot of {self.direct.endpoints[0]} into the repository (the way back)",
                *(f"{n.node}: static pod {holdscript.MANIFEST_FILE} ({self.etcd_image}) parks kube-apiserver, "
                  f"kube-controller-manager and kube-scheduler in {n.hold(self.run.id, self.hold_timeout).parked_dir} "
                  "and holds them until the verdict" for n in self.nodes),
                f"rewrite the keys under {self.prefix}/: {self.to_put} put, {self.to_delete} deleted, "
                f"{self.unchanged} already equal; check every key and value; verdict `restored`",
                "every node starts its API server again; wait until it answers; report"]

    def summary(self) -> str:
        lines = [f"(dry run) would restore the external etcd {self.cluster_id} (etcd {self.cluster_version}, "
                 f"revision {self.revision_before}) through {', '.join(self.direct.endpoints)} from "
                 f"{self.snapshot.describe()} (revision {self.snapshot.status.revision})"]
        return "\n".join(lines + [f"  {s}" for s in self.steps()]) + "\n"


def _identity(kube: Kube, etcd: Etcd, prefix: str, console: Console) -> None:
    """Refuse unless this etcd is the cluster's storage: it holds kube-system with the UID the API shows."""
    uid = str(kube.get("/api/v1/namespaces/kube-system")["metadata"]["uid"])
    key = f"{prefix}/namespaces/kube-system".encode()
    value = etcd.get(key)
    if value is None or uid.encode() not in value:
        raise EtcdError(
            f"the etcd at {', '.join(etcd.direct.endpoints)} is not this cluster's storage: "
            + (f"it has no {key.decode()}" if value is None else f"its {key.decode()} is not the kube-system "
               f"namespace (UID {uid}) the API server shows"),
            hint="Give --endpoints of the etcd the API servers use (their --etcd-servers).")
    console.say(f"etcd at {etcd.direct.endpoints[0]} holds this cluster's objects (kube-system {uid})")


def plan(session: Session, etcd: Etcd, snapshot: LocalSnapshot, opts: RestoreOptions) -> ExternalPlan:
    """Everything checked before anything changes: the API servers and their etcd, this etcd the cluster's storage,
    the snapshot of its version and of a Kubernetes cluster, the keys to write and delete."""
    kube, console, run = session.kube, session.console, session.run
    namespace, dry_run = opts.namespace, opts.client_dry_run
    nodes = api_nodes(kube)
    prefix = nodes[0].prefix
    console.say(f"API servers on {', '.join(n.node for n in nodes)} (their etcd: {nodes[0].etcd_servers}, prefix "
                f"{prefix})")
    version, cluster_id, revision = etcd.check()
    _identity(kube, etcd, prefix, console)  # first: a wrong etcd is the cause of anything else that differs
    check_snapshot(snapshot, version)
    space = keyspace.read(snapshot.path).under(prefix.encode() + b"/")
    if f"{prefix}/namespaces/kube-system".encode() not in space.keys:
        raise EtcdError(f"the snapshot holds no {prefix}/namespaces/kube-system: it is not a snapshot of a Kubernetes "
                        f"cluster that stores its objects under {prefix}")
    put, delete, unchanged = differences(space, live(etcd.ep, prefix.encode() + b"/"))
    if not dry_run:
        for warning in encryption.preflight(kube, snapshot.details, namespace=namespace, run=run, console=console,
                                            helper_image=opts.helper_image):
            console.warn(warning)
    image = opts.etcd_image or f"registry.k8s.io/etcd:{version}-0"
    return ExternalPlan(
        run=run, direct=etcd.direct, snapshot=snapshot, space=space, nodes=nodes, prefix=prefix,
        cluster_version=version, cluster_id=cluster_id, revision_before=revision, to_put=len(put),
        to_delete=len(delete), unchanged=unchanged, etcd_image=image, helper_image=opts.helper_image,
        namespace=namespace, hold_timeout=opts.hold_timeout,
        counts_before={} if dry_run else count_objects(kube),
        nodes_before=[] if dry_run else names(kube, "/api/v1/nodes"),
        pods_before=[] if dry_run else names(kube, "/api/v1/pods"))


# ----------------------------------------------------------------------------------------------------- run
def _writer_pod(kube: Kube, p: ExternalPlan, node: ApiNode) -> HelperPod:
    """A busybox pod on the node with /etc/kubernetes and our directory: it writes the hold manifest. Created, not
    yet waited for (`_writer_pods`)."""
    spec = pods.pod_manifest(
        pod_name("dr-etcd-hold", node.node), p.namespace, purpose="etcd-hold-writer", node=node.node, deadline=3600,
        labels=p.run.labels(), annotations=p.run.annotations(),
        volumes=[pods.host_path_volume("kubernetes", KUBERNETES_DIR),
                 pods.host_path_volume("kubectl-dr", DR_DIR, "DirectoryOrCreate")],
        containers=[{"name": "node", "image": p.helper_image, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 5 & wait $!; done"],
                     "volumeMounts": [{"name": "kubernetes", "mountPath": HOST_KUBERNETES},
                                      {"name": "kubectl-dr", "mountPath": HOST_DR}]}])
    return pods.create(kube, spec, what=f"etcd hold on {node.node}")


def _writer_pods(kube: Kube, p: ExternalPlan) -> list[tuple[ApiNode, HelperPod]]:
    """A writer pod on every API server's node, running; all created before the first is waited for (their
    kubelets start them side by side), none left behind when one cannot start."""
    writers: list[tuple[ApiNode, HelperPod]] = []
    try:
        for n in p.nodes:
            writers.append((n, _writer_pod(kube, p, n)))
        for _, pod in writers:
            pods.wait_running(pod, timeout=180, stuck_after=15)
    except BaseException:
        pods.delete_together([pod for _, pod in writers], quiet=True)
        raise
    return writers


def _hand_over(kube: Kube, pod: HelperPod, p: ExternalPlan, node: ApiNode) -> None:
    import yaml

    manifest = yaml.safe_dump(holdscript.static_pod(node.hold(p.run.id, p.hold_timeout), p.etcd_image,
                                                    p.helper_image)).encode()
    dest = f"{HOST_KUBERNETES}/manifests/{holdscript.MANIFEST_FILE}"
    temp = f"{HOST_KUBERNETES}/manifests/.kubectl-dr.tmp"  # a dot file is not a pod; the rename is atomic
    script = f"set -e; test ! -e {dest}; mkdir -p {HOST_DR}/{p.run.id}; cat > {temp} && mv {temp} {dest}"
    stream = open_exec(kube, pod.namespace, pod.name, bounded_input(["sh", "-c", script], len(manifest)),
                       container="node", stdin=True, timeouts=Timeouts(idle=120.0))
    stream.run(stdin=[manifest], stdout=lambda _: None).check(f"writing the hold manifest on node {node.node}")


def node_states(etcd: Etcd, run_id: str) -> dict[str, str]:
    prefix = f"{run_prefix(run_id)}/nodes/".encode()
    return {k[len(prefix):].decode(): v.decode() for k, v in etcd.under(prefix).items()}


def _release(direct: Direct, run_id: str, console: Console) -> None:
    """Tell the nodes to start their API servers on the untouched data (only while nobody claimed the run).
    A connection of its own: the cleanup runs after the command's connection is closed."""
    base = run_prefix(run_id).encode()
    with Etcd(direct) as etcd:
        if etcd.put_if_absent(base + b"/applying", base + b"/verdict", ABANDONED.encode()):
            console.say("the nodes were told to start their API servers again; nothing in etcd was changed")


SAME_COMMAND = "kubectl dr etcd restore --from SNAPSHOT --endpoints … (the same command)"


@dataclass(frozen=True)
class Rerun:
    """The commands to paste after a run that stopped: the same one, and the same with a longer hold."""

    same: str = SAME_COMMAND
    longer_hold: str = SAME_COMMAND + " --hold-timeout SECONDS"


def run(session: Session, p: ExternalPlan, etcd: Etcd, released: cleanup.UndoStep, repository: Repository, *,
        rerun: Rerun | None = None) -> Outcome:
    """Hold the API servers down, take the safety snapshot into `repository`, rewrite the keys, let the API
    servers go. `released`: the release of the restore lease the caller holds (common.take_lease; it wrote the
    runbook then), run before the API servers stop. `rerun`: the commands a hint tells to paste (this run's own,
    the snapshot pinned)."""
    kube, console = session.kube, session.console
    again = rerun or Rerun()
    stack = cleanup.current()
    for old in finished_runs(etcd):  # we hold the lease: these runs are over (a held one is never among them)
        etcd.delete_prefix(run_prefix(old).encode() + b"/")
    writers = _writer_pods(kube, p)
    base = run_prefix(p.run.id).encode()
    etcd.put(base + b"/run", p.run.id.encode())
    etcd.put(base + b"/prefix", p.prefix.encode())  # what a second run needs to finish this one without the API
    etcd.put(base + b"/record", _record(p))  # and with which snapshot only (check_bound)
    release = stack.push("start the API servers again (the rewrite had not begun)",
                         lambda: _release(etcd.direct, p.run.id, console))
    stack.run(released)  # the API server is about to stop
    for node, pod in writers:
        _hand_over(kube, pod, p, node)
    for _, pod in writers:
        if pod.step is not None:  # the API server goes away: no deletion to wait for at exit
            stack.discard(pod.step)
            pod.step = None
        with contextlib.suppress(DrError):
            pod.request_delete()
    console.say(f"handed over: every control-plane node stops its API server and holds it down (at most "
                f"{p.hold_timeout}s "
        "unless the rewrite begins)")
    _wait_parked(etcd, p, console)
    if not etcd.put_if_absent(base + b"/verdict", base + b"/applying", p.run.id.encode()):
        stack.discard(release)
        raise EtcdError("a node gave up waiting before the rewrite began: its API server runs again on the old data, "
                        "nothing was changed", hint=f"Run it again with a longer hold: `{again.longer_hold}`")
    stack.discard(release)
    # Claimed, nothing written yet: the safety snapshot is exactly what the rewrite is about to replace.
    try:
        safety = _safety_snapshot(kube, console, etcd, repository, p.run.id)
    except BaseException:
        etcd.put(base + b"/verdict", ABANDONED.encode())
        console.say("no safety snapshot, so no rewrite: the nodes start their API servers again on the untouched data")
        raise
    etcd.put(base + b"/safety", safety.encode())
    console.say(f"safety snapshot {safety} saved: `kubectl dr etcd restore --from {safety} --endpoints …` puts this "
                "data "
        "back")
    changes = _apply(etcd, p.run.id, p.space, p.prefix, console, again.same)
    return finish(kube, etcd, p.run.id, p.nodes, p.namespace, console, plan=p, changes=changes, safety=safety)


def _safety_snapshot(kube: Kube, console: Console, etcd: Etcd, repository: Repository, run_id: str) -> str:
    """The data as it is before the rewrite, as a snapshot of the repository: its ID. Named as this run's: a rerun
    with `--from latest` must not take it for the snapshot to restore."""
    return str(etcd_snapshot.direct(etcd.direct, repository, console, _api_identity(kube),
                                    details={"safetySnapshotOf": run_id}).manifest.id)


def _api_identity(kube: Kube) -> ClusterIdentity | None:
    """The cluster the kubeconfig reaches, if it answers: the safety snapshot keeps its server and context as
    hints when the snapshot's own kube-system is this one."""
    try:
        return try_cluster_identity(kube)[0]
    except DrError:
        return None  # the API is down: the snapshot itself says which cluster it is of


def _wait_parked(etcd: Etcd, p: ExternalPlan, console: Console) -> None:
    deadline = time.monotonic() + max(p.hold_timeout - PARK_WAIT_MARGIN, 10)
    told = 0.0
    pause = pauses(0.5)
    while True:
        states = node_states(etcd, p.run.id)
        if any(s == holdscript.FAILED for s in states.values()):
            failed = [n for n, s in states.items() if s == holdscript.FAILED]
            raise EtcdError(f"node(s) {', '.join(failed)} could not stop their API server; the others start again "
                            "on the old data, nothing was changed",
                            hint=f"Their status file: {DR_DIR}/{p.run.id}/status-hold on the node.")
        waiting = [n.node for n in p.nodes if states.get(n.node) != PARKED]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise EtcdError(f"node(s) {', '.join(waiting)} did not report their API server stopped in time; nothing "
                            "was changed and the API servers start again",
                            hint="Their static pod may not run (image, kubelet): see "
                                 f"{DR_DIR}/{p.run.id}/status-hold on the node.")
        if time.monotonic() - told > 15:
            told = time.monotonic()
            console.say(f"waiting for node(s) {', '.join(waiting)} to stop their API server")
        # One range read in etcd: the rewrite begins within half a second of the last node's word, sooner at first.
        time.sleep(next(pause))


def _apply(etcd: Etcd, run_id: str, space: Keyspace, prefix: str, console: Console, rerun: str) -> Changes:
    """The claimed part: rewrite, check, verdict. An interruption here leaves the API servers held."""
    try:
        console.say(f"rewriting the keys under {prefix}/ in etcd")
        changes = rewrite(etcd.ep, space, prefix.encode() + b"/", console.say)
        now = live(etcd.ep, prefix.encode() + b"/")
        if digest(now) != digest(space.keys) or {k: bool(v.lease) for k, v in now.items()} != {
                k: bool(v.lease) for k, v in space.keys.items()}:
            put, delete, _ = differences(space, now)
            raise EtcdError(f"after the rewrite etcd still differs from the snapshot ({len(put)} key(s) differ, "
                            f"{len(delete)} too many): something else writes to it",
                            hint=f"The API servers stay stopped. Stop the other writer, then run `{rerun}` again.")
        console.say(f"etcd holds exactly the snapshot's {len(space.keys)} keys under {prefix}/ (every key and value "
                    "checked)")
        etcd.put(f"{run_prefix(run_id)}/verdict".encode(), RESTORED.encode())
        return changes
    except BaseException as exc:
        console.say(f"error: the rewrite did not finish ({type(exc).__name__}): the API servers stay stopped so that "
                    "nothing "
            f"serves a half-restored state. Run `{rerun}` again to finish it (it needs no API server), or `--from` "
            "the safety snapshot to go back.")
        raise


def resume(session: Session, etcd: Etcd, run_id: str, space: Keyspace, prefix: str, namespace: str,
           rerun: str = SAME_COMMAND) -> Outcome:
    """A held run (claimed, no verdict): finish it with this snapshot, then release its nodes."""
    kube, console = session.kube, session.console
    console.say(f"run {run_id} holds the API servers down with its rewrite unfinished: finishing it with this snapshot")
    changes = _apply(etcd, run_id, space, prefix, console, rerun)
    states = node_states(etcd, run_id)
    return finish(kube, etcd, run_id, [ApiNode(n, "", ("", "", ""), prefix, "") for n in sorted(states)],
                  namespace, console, changes=changes)


def _wait_hold_pods_gone(kube: Kube, console: Console, timeout: float = 60.0) -> None:
    """A node reports done just before it removes its manifest; its kubelet then stops the pod and deletes the
    mirror pod. Leave nothing of ours behind: wait for that."""
    selector = "app.kubernetes.io/managed-by=kubectl-dr,kubectl-dr.io/purpose=etcd-hold"
    deadline = time.monotonic() + timeout
    pause = pauses(0.5)
    while True:
        try:
            left = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=selector).get("items") or []
        except DrError as exc:
            console.warn(f"cannot check that the hold pods are gone: {exc.message}")
            return
        if not left:
            return
        if time.monotonic() > deadline:
            console.warn(f"hold pod(s) {', '.join(p['metadata']['name'] for p in left)} still exist; their nodes "
                f"remove them once {holdscript.MANIFEST_FILE} has left the manifests directory")
            return
        time.sleep(next(pause))


def finish(kube: Kube, etcd: Etcd, run_id: str, nodes: list[ApiNode], namespace: str, console: Console, *,
           plan: ExternalPlan | None = None, changes: Changes | None = None, safety: str | None = None) -> Outcome:
    wait_api(kube, console)
    deadline = time.monotonic() + 300
    pause = pauses(0.5)
    while True:
        states = node_states(etcd, run_id)
        pending = [n.node for n in nodes if states.get(n.node) != DONE]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(next(pause))  # one range read in etcd
    now = int(time.time())
    outcome = Outcome("restore", run_id, {n.node: [(now, "done" if states.get(n.node) == DONE else
                                                     states.get(n.node, "never started"), "")] for n in nodes})
    outcome.details = {"etcdTopology": "external", "safetySnapshot": safety,
                       "keys": changes.to_dict() if changes else None}
    remove_restored_helpers(kube, namespace, console)
    _wait_hold_pods_gone(kube, console)
    try:
        _, _, outcome.revision_after = etcd.check()
    except DrError as exc:
        console.warn(f"cannot read the etcd status after the restore: {exc.message}")
    if not pending:
        etcd.delete_prefix(run_prefix(run_id).encode() + b"/")
    if plan is not None:
        outcome.revision_before = plan.revision_before
        compare_with_before(kube, outcome, plan.counts_before, plan.nodes_before, plan.pods_before)
    if pending:
        raise EtcdError(f"etcd was restored, but node(s) {', '.join(pending)} did not report their API server back "
                        "within 300s", hint=f"See {DR_DIR}/{run_id}/status-hold on those nodes; their manifests are "
                                            f"back in {MANIFESTS_DIR} once the status file says started-control-plane.")
    return outcome
