"""The loopback nodes as clients see them: exec (Python client, v5 and v4-only servers, tty), volumes
(configMap, secret, hostPath checks, service-account token), Multi-Attach, graceful deletion, logs and
crash-loop back-off, a slowed link (`up --link-mbit`), against a running cluster whose directory is
closed to other users (0700)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from tests.cluster.fixture import Cluster, ClusterFactory, kubectl_path
from tests.polling import eventually

pytestmark = [pytest.mark.slow]
Json = dict[str, Any]
Core = Any  # client.CoreV1Api, used with plain dict bodies and raw responses
BUSYBOX = "busybox:1.36"
NS = "node-tests"
CP_TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}

def core_api(cluster: Cluster) -> Core:
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def core(cluster: Cluster) -> Iterator[Core]:
    api = core_api(cluster)
    api.create_namespace({"metadata": {"name": NS}})
    yield api
    api.delete_namespace(NS)


def make_pod(core: Core, name: str, command: list[str], *, namespace: str = NS,
             container: Json | None = None, **spec: Any) -> None:
    main: Json = {"name": "main", "image": BUSYBOX, "command": command, **(container or {})}
    body = {"metadata": {"name": name}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [main], **spec}}
    core.create_namespaced_pod(namespace, body)


def pod(core: Core, name: str, namespace: str = NS) -> Json:
    raw = core.read_namespaced_pod(name, namespace, _preload_content=False)
    data: Json = json.loads(raw.data)
    return data


def wait_running(core: Core, name: str, namespace: str = NS, timeout: float = 60) -> Json:
    def running() -> Json | None:
        p = pod(core, name, namespace)
        statuses = p["status"].get("containerStatuses") or []
        return p if statuses and all("running" in s["state"] for s in statuses) else None

    result: Json = eventually(running, timeout=timeout, what=f"pod {name} running")
    return result


def events(core: Core, name: str, namespace: str = NS) -> list[Json]:
    raw = core.list_namespaced_event(namespace, _preload_content=False)
    return [e for e in json.loads(raw.data)["items"] if e["involvedObject"].get("name") == name]


def gone(core: Core, name: str, namespace: str = NS) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


def processes_with(token: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            pids.append(int(entry))
    return pids


# -------------------------------------------------------------------------------------------- exec
def _exec(core: Core, name: str, command: list[str], *, stdin: bool = True, tty: bool = False,
          namespace: str = NS) -> Any:
    return stream(core.connect_get_namespaced_pod_exec, name, namespace, command=command, stdin=stdin,
                  stdout=True, stderr=not tty, tty=tty, _preload_content=False)


def test_cluster_directory_is_closed_to_other_users(cluster: Cluster) -> None:
    # What the non-root tests below run against: pytest's temp directories are 0700.
    assert any(os.stat(d).st_mode & 0o077 == 0 for d in [cluster.dir, *cluster.dir.parents][:3])


def test_exec_python_client_v5_stdin_close(cluster: Cluster, core: Core) -> None:
    make_pod(core, "exec-v5", ["sleep", "3600"])
    wait_running(core, "exec-v5")
    ws = _exec(core, "exec-v5", ["sh", "-c", "cat; echo to-stderr >&2; exit 3"])
    assert ws.subprotocol == "v5.channel.k8s.io"
    ws.write_stdin("hello\nworld\n")
    ws.close_channel(0)  # v5 CLOSE: the command sees the end of its stdin
    ws.run_forever(timeout=30)
    assert ws.read_stdout() == "hello\nworld\n"
    assert ws.read_stderr() == "to-stderr\n"
    assert ws.returncode == 3


def test_containers_and_exec_start_with_default_signal_dispositions(cluster: Cluster, core: Core) -> None:
    """As a real runtime starts them: SIGPIPE not ignored (the node's Python ignores it, and an ignored signal
    survives exec), so a writer into a closed pipe ends quietly, as `yes | head -1` does on a real node."""
    make_pod(core, "signals", ["sh", "-c", "grep SigIgn /proc/self/status; sleep 3600"])
    wait_running(core, "signals")
    ws = _exec(core, "signals", ["sh", "-c", "yes | head -1; grep SigIgn /proc/$$/status"], stdin=False)
    ws.run_forever(timeout=30)
    out, err = ws.read_stdout(), ws.read_stderr()
    ignored = int(out.split("SigIgn:")[1].split()[0], 16)
    assert out.startswith("y\n") and not ignored & (1 << 12) and err == "", (out, err)  # 13: SIGPIPE
    logs = eventually(lambda: core.read_namespaced_pod_log("signals", NS), what="the container's SigIgn line")
    assert int(logs.split("SigIgn:")[1].split()[0], 16) == 0


def test_exec_python_client_on_a_v4_only_cluster(cluster_factory: ClusterFactory) -> None:
    v4 = cluster_factory(control_planes=1, workers=1, exec_protocols=("v4",))
    api = core_api(v4)
    api.create_namespace({"metadata": {"name": "v4-only"}})
    make_pod(api, "exec-v4", ["sleep", "3600"], namespace="v4-only")
    wait_running(api, "exec-v4", "v4-only")
    ws = _exec(api, "exec-v4", ["sh", "-c", "read line; echo got $line; exit 4"], namespace="v4-only")
    assert ws.subprotocol == "v4.channel.k8s.io"
    ws.write_stdin("one\n")
    ws.close_channel(0)  # not in v4: the client leaves it out
    ws.run_forever(timeout=30)
    assert ws.read_stdout() == "got one\n"
    assert ws.returncode == 4
    out = stream(api.connect_get_namespaced_pod_exec, "exec-v4", "v4-only", command=["echo", "plain"],
                 stdin=False, stdout=True, stderr=True, tty=False)
    assert out == "plain\n"


def test_exec_tty(cluster: Cluster, core: Core) -> None:
    make_pod(core, "exec-tty", ["sleep", "3600"])
    wait_running(core, "exec-tty")
    ws = _exec(core, "exec-tty", ["sh", "-c", "sleep 1; tty; stty size; read x; echo got-$x"], tty=True)
    ws.write_channel(4, json.dumps({"Width": 100, "Height": 40}))
    ws.write_stdin("abc\n")
    ws.run_forever(timeout=30)
    out = ws.read_stdout()
    # A terminal: CRLF line ends, the input echoed, the size the client asked for, stderr merged.
    lines = out.split("\r\n")
    assert "abc" in lines and "got-abc" in lines, out
    assert "40 100" in lines, out
    assert "/dev/pts/0" in lines, out  # the container's own devpts, as a runtime allocates the console
    assert ws.returncode == 0


def test_exec_kubectl_tty_and_stdin(cluster: Cluster, core: Core) -> None:
    make_pod(core, "exec-kubectl", ["sleep", "3600"])
    wait_running(core, "exec-kubectl")
    result = cluster.kubectl("-n", NS, "exec", "-i", "exec-kubectl", "--", "sh", "-c", "wc -c; exit 2",
                             input="12345", check=False)
    assert (result.returncode, result.stdout.strip()) == (2, "5")


# ------------------------------------------------------------------------------------------ volumes
def test_configmap_and_secret_volumes(cluster: Cluster, core: Core) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"a.conf": "alpha", "b": "beta"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}})
    make_pod(core, "vols", ["sleep", "3600"], volumes=[
        {"name": "cfg", "configMap": {"name": "cfg", "items": [
            {"key": "a.conf", "path": "sub/a.conf", "mode": 0o600}]}},
        {"name": "all", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
    ], container={"volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "all", "mountPath": "/all"},
                                   {"name": "sec", "mountPath": "/sec"}]})
    wait_running(core, "vols")
    script = ("cat /cfg/sub/a.conf; echo; stat -L -c %a /cfg/sub/a.conf; ls /all | sort | tr '\\n' ' '; echo; "
              "cat /sec/password; echo; stat -L -c %a /sec/password; "
              "(echo x > /all/b) 2>/dev/null && echo writable || echo read-only; "
              "touch /sec/new 2>/dev/null && echo writable || echo read-only")
    out = stream(core.connect_get_namespaced_pod_exec, "vols", NS, command=["sh", "-c", script],
                 stdin=False, stdout=True, stderr=True, tty=False)
    assert out.split("\n")[:8] == ["alpha", "600", "a.conf b ", "s3cret", "400", "read-only", "read-only", ""]


def test_service_account_token_mount(cluster: Cluster, core: Core) -> None:
    make_pod(core, "with-token", ["sleep", "3600"])
    make_pod(core, "no-token", ["sleep", "3600"], automountServiceAccountToken=False)
    wait_running(core, "with-token")
    wait_running(core, "no-token")
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    listing = stream(core.connect_get_namespaced_pod_exec, "with-token", NS, command=["ls", sa],
                     stdin=False, stdout=True, stderr=True, tty=False)
    assert sorted(listing.split()) == ["ca.crt", "namespace", "token"]
    missing = stream(core.connect_get_namespaced_pod_exec, "no-token", NS,
                     command=["sh", "-c", "ls /var/run/secrets 2>&1; echo rc=$?"],
                     stdin=False, stdout=True, stderr=True, tty=False)
    assert missing.strip().endswith("rc=1"), missing


@pytest.mark.parametrize(("kind", "what"), [("Directory", "a directory"), ("File", "a file")])
def test_host_path_type_missing_is_failed_mount(cluster: Cluster, core: Core, kind: str,
                                                what: str) -> None:
    name = f"hostpath-{kind.lower()}"
    make_pod(core, name, ["sleep", "3600"], volumes=[
        {"name": "h", "hostPath": {"path": f"/no/such/{kind.lower()}", "type": kind}}],
        container={"volumeMounts": [{"name": "h", "mountPath": "/h"}]})

    def failed_mount() -> list[Json]:
        return [e for e in events(core, name) if e["reason"] == "FailedMount"]

    found = eventually(failed_mount, what="a FailedMount event")
    assert found[0]["type"] == "Warning" and found[0]["source"]["component"] == "kubelet"
    assert found[0]["message"] == (f'MountVolume.SetUp failed for volume "h" : hostPath type check failed: '
                                   f"/no/such/{kind.lower()} is not {what}")
    time.sleep(1)
    p = pod(core, name)
    assert p["status"]["phase"] == "Pending"
    assert [s["state"] for s in p["status"]["containerStatuses"]] == [{"waiting": {"reason": "ContainerCreating"}}]
    table = cluster.kubectl("-n", NS, "get", "pod", name, "--no-headers").stdout.split()
    assert table[2] == "ContainerCreating"


def test_multi_attach_then_second_pod_starts(cluster: Cluster, core: Core) -> None:
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "rwo"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    volume = [{"name": "v", "persistentVolumeClaim": {"claimName": "rwo"}}]
    mounts = {"volumeMounts": [{"name": "v", "mountPath": "/v"}]}
    make_pod(core, "holder", ["sleep", "3600"], volumes=volume, container=mounts,
             nodeSelector={"kubernetes.io/hostname": cluster.workers[0]})
    wait_running(core, "holder")
    make_pod(core, "waiter", ["sleep", "3600"], volumes=volume, container=mounts,
             nodeSelector={"kubernetes.io/hostname": cluster.control_planes[0]}, tolerations=[CP_TOLERATION])
    pv = json.loads(core.read_namespaced_persistent_volume_claim("rwo", NS, _preload_content=False).data)[
        "spec"]["volumeName"]

    def attach_failed() -> list[Json]:
        return [e for e in events(core, "waiter") if e["reason"] == "FailedAttachVolume"]

    found = eventually(attach_failed, what="a FailedAttachVolume event")
    assert found[0]["type"] == "Warning"
    assert found[0]["message"] == f'Multi-Attach error for volume "{pv}" Volume is already used by pod(s) holder'
    assert found[0]["source"]["component"] == "attachdetach-controller"
    assert pod(core, "waiter")["status"]["phase"] == "Pending"
    core.delete_namespaced_pod("holder", NS, grace_period_seconds=0)
    eventually(lambda: gone(core, "holder"), what="holder gone")
    wait_running(core, "waiter", timeout=60)


# ---------------------------------------------------------------------------------------- deletion
def test_graceful_deletion_sigterm_then_sigkill(cluster: Cluster, core: Core) -> None:
    # The shell is PID 1 and traps TERM: it records the signal and keeps running until SIGKILL.
    script = "trap 'echo term > /marks/$HOSTNAME' TERM; while :; do sleep 0.2; done; : 424242"
    marks = {"name": "marks", "hostPath": {"path": "/var/marks", "type": "DirectoryOrCreate"}}
    make_pod(core, "stubborn", ["sh", "-c", script], volumes=[marks],
             container={"volumeMounts": [{"name": "marks", "mountPath": "/marks"}]},
             nodeSelector={"kubernetes.io/hostname": cluster.workers[0]}, terminationGracePeriodSeconds=3)
    wait_running(core, "stubborn")
    assert processes_with("424242")
    started = time.monotonic()
    cluster.kubectl("-n", NS, "delete", "pod", "stubborn", "--wait=true", timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed >= 3  # SIGTERM was trapped: only the SIGKILL after the grace period ended it
    assert (cluster.layout.node(cluster.workers[0]) / "var/marks/stubborn").read_text() == "term\n"
    assert not processes_with("424242")


def test_delete_with_short_grace_period(cluster: Cluster, core: Core) -> None:
    # PID 1 without a TERM handler ignores SIGTERM: --grace-period=1 ends it with SIGKILL after 1s.
    make_pod(core, "quick", ["sh", "-c", "while :; do sleep 0.2; done; : 535353"], terminationGracePeriodSeconds=60)
    wait_running(core, "quick")
    started = time.monotonic()
    cluster.kubectl("-n", NS, "delete", "pod", "quick", "--grace-period=1", timeout=60)
    assert 1 <= time.monotonic() - started < 15
    assert gone(core, "quick") and not processes_with("535353")


# -------------------------------------------------------------------------------------------- logs
def test_logs_previous_since_tail_timestamps(cluster: Cluster, core: Core) -> None:
    script = 'echo "run $(cat /proc/uptime | cut -d. -f1)"; for i in 1 2 3 4; do echo line$i; done; sleep 2; exit 1'
    make_pod(core, "logger", ["sh", "-c", script], restartPolicy="OnFailure")

    def restarted() -> bool:
        statuses = pod(core, "logger")["status"].get("containerStatuses") or []
        return bool(statuses and statuses[0]["restartCount"] >= 1 and "running" in statuses[0]["state"])

    eventually(restarted, timeout=90, what="a restart")
    previous = core.read_namespaced_pod_log("logger", NS, previous=True)
    assert previous.split("\n")[1:] == ["line1", "line2", "line3", "line4", ""]
    assert core.read_namespaced_pod_log("logger", NS, tail_lines=2) in ("line3\nline4\n", "line4\n", "")
    eventually(lambda: core.read_namespaced_pod_log("logger", NS, tail_lines=2) == "line3\nline4\n",
               what="the current run's last lines")
    stamped = core.read_namespaced_pod_log("logger", NS, timestamps=True).rstrip("\n").split("\n")
    assert len(stamped) == 5
    for line in stamped:
        stamp, _, text = line.partition(" ")
        assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000000000Z"), line
        assert text.startswith(("run", "line"))
    assert core.read_namespaced_pod_log("logger", NS, since_seconds=3600).count("line") == 4
    time.sleep(2.5)
    assert core.read_namespaced_pod_log("logger", NS, since_seconds=1) == ""
    # kubectl spells the same options.
    assert cluster.kubectl("-n", NS, "logs", "logger", "--previous", "--tail=1").stdout == "line4\n"


def test_crash_loop_back_off(cluster: Cluster, core: Core) -> None:
    make_pod(core, "crasher", ["sh", "-c", "echo boom; exit 7"])

    def backing_off() -> Json | None:
        p = pod(core, "crasher")
        statuses = p["status"].get("containerStatuses") or []
        waiting = (statuses[0]["state"].get("waiting") or {}) if statuses else {}
        return p if waiting.get("reason") == "CrashLoopBackOff" else None

    p = eventually(backing_off, timeout=60, what="CrashLoopBackOff")
    status = p["status"]["containerStatuses"][0]
    uid = p["metadata"]["uid"]
    assert status["restartCount"] >= 1 and status["ready"] is False
    assert status["lastState"]["terminated"]["exitCode"] == 7
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=main "
                                                            f"pod=crasher_{NS}({uid})")
    assert p["status"]["phase"] == "Running"
    table = cluster.kubectl("-n", NS, "get", "pod", "crasher", "--no-headers").stdout.split()
    assert table[1:3] == ["0/1", "CrashLoopBackOff"]
    backoff = [e for e in events(core, "crasher") if e["reason"] == "BackOff"]
    assert backoff and backoff[0]["message"] == (f"Back-off restarting failed container main in pod "
                                                 f"crasher_{NS}({uid})")


def test_non_root_pod_writes_its_volume(cluster: Cluster, core: Core) -> None:
    # The cluster directory is 0700 (pytest's temp dirs): the runtime binds the rootfs and volumes as root.
    # (Known gap: inside the container's user namespace supplementary groups such as the fsGroup show as
    # 65534 to `id -G`; the kernel still grants their access, and exec'd commands show them.)
    make_pod(core, "nonroot", ["sh", "-c", "id -u > /data/id && id -g >> /data/id && sleep 3600"],
             securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
             volumes=[{"name": "data", "emptyDir": {}}],
             container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]})
    wait_running(core, "nonroot")
    out = stream(core.connect_get_namespaced_pod_exec, "nonroot", NS,
                 command=["sh", "-c", "cat /data/id; stat -c %u:%g /data/id; id -G"],
                 stdin=False, stdout=True, stderr=True, tty=False)
    assert out.split("\n")[:4] == ["1000", "3000", "1000:2000", "3000 2000"]


def test_link_mbit_limits_exec_both_ways(cluster_factory: ClusterFactory) -> None:
    """`up --link-mbit 16`: 2 MB take at least a second each way (2 MB/s), and arrive whole."""
    slow = cluster_factory(control_planes=1, workers=1, link_mbit=16)
    assert slow.state["options"]["link_mbit"] == 16
    api = core_api(slow)
    api.create_namespace({"metadata": {"name": "slow-link"}})
    make_pod(api, "link", ["sleep", "3600"], namespace="slow-link")
    wait_running(api, "link", "slow-link")
    kubectl = [str(kubectl_path("1.33")), "--kubeconfig", str(slow.kubeconfig), "-n", "slow-link", "exec"]
    size = 2_000_000
    data = os.urandom(size)
    started = time.monotonic()
    up = subprocess.run([*kubectl, "-i", "link", "--", "sh", "-c", "sha256sum | cut -d' ' -f1"], input=data,
                        capture_output=True, timeout=120, check=True)
    upload = time.monotonic() - started
    assert up.stdout.decode().strip() == hashlib.sha256(data).hexdigest()
    started = time.monotonic()
    down = subprocess.run([*kubectl, "link", "--", "head", "-c", str(size), "/dev/zero"], capture_output=True,
                          timeout=120, check=True)
    download = time.monotonic() - started
    assert down.stdout == bytes(size)
    # 16 Mbit/s is 2 MB/s; the bucket lends at most 20 ms. Only the floor is asserted: a
    # loaded machine may be slower than the link, never faster.
    print(f"link 16 Mbit/s: 2 MB up in {upload:.2f}s, down in {download:.2f}s")
    assert upload >= 0.9, upload
    assert download >= 0.9, download
