"""Schedules' pure parts on real tools: cron expressions and their systemd equivalents (checked against
`systemd-analyze calendar` where it is installed), the crontab lines, the node listing parser, and the
snapshot Job's busybox script run by the real busybox on real files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import UsageError
from kubectl_dr.schedules import client_jobs, cron, etcd_job, scripts
from kubectl_dr.schedules.node_snapshots import parse_listing
from tests.cluster.fixture import BUSYBOX

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 28, 22, 7, 30, tzinfo=UTC)  # a Saturday, the night before Europe's clocks go forward


# --------------------------------------------------------------------------------------------- cron
@pytest.mark.parametrize(("expr", "message"), [
    ("0 25 * * *", "the hour field '25' is out of range (0-23)"),
    ("* * *", "expected 5 fields, found 3"),
    ("*/0 * * * *", "invalid step '0'"),
    ("0 0 31 2 *", "it never fires"),
    ("@sometimes", "unknown descriptor @sometimes"),
    ("0 0 * * FUN", "'FUN' is not a number in the day of week field"),
])
def test_cron_errors_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        cron.parse(expr)
    assert message in exc.value.message and exc.value.hint and "0 */12 * * *" in exc.value.hint


def test_cron_next_runs_in_the_schedules_zone() -> None:
    assert cron.next_run("0 */12 * * *", None, T0) == dt.datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert cron.next_run("@hourly", None, T0) == dt.datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    # 02:30 Berlin does not exist on 2026-03-29 (clocks jump 02:00 → 03:00); the next is the 30th, CEST.
    berlin = cron.next_run("30 2 * * *", "Europe/Berlin", T0)
    assert berlin is not None and berlin.astimezone(UTC).date() >= dt.date(2026, 3, 29)
    assert cron.next_run("30 2 * * 1-5", "America/New_York", T0) == dt.datetime(2026, 3, 30, 6, 30, tzinfo=UTC)
    assert cron.next_run("0 0 1 JAN *", None, T0) == dt.datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="unknown time zone"):
        cron.zone("Mars/Olympus")


# ----------------------------------------------------------------------------------------- print
def _ctx(**env: str) -> client_jobs.Context:
    return client_jobs.Context(executable="/opt/kubectl-dr/bin/kubectl-dr", kubeconfig="/home/ops/.kube/prod",
                               kube_context="prod", repo="s3://dr/prod", env=env,
                               state_dir="/home/ops/.local/state/kubectl-dr")


def test_crontab_lines_parse_lock_log_and_hold_no_secret() -> None:
    ctx = _ctx(AWS_PROFILE="backups", AWS_SECRET_ACCESS_KEY="s3cr3t", AWS_ACCESS_KEY_ID="AKIA")
    jobs = client_jobs.build(["etcd-pull", "pvc-backup", "copy", "prune"], ctx=ctx, cron_expr="15 */12 * * *",
                             pvcs=["shop/data-db-0", "shop/data-db-1"], to="s3://dr/offsite%1",
                             encrypt_to=["age1xyz"], keep={"daily": 7})
    text = client_jobs.crontab(jobs, ctx, None)
    assert "s3cr3t" not in text and "AKIA" not in text and "AWS_PROFILE=backups" in text
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) == 5  # one per claim
    names = set()
    for line in entries:
        fields = line.split(None, 5)
        cron.parse(" ".join(fields[:5]))  # a valid schedule in the first five fields
        command = fields[5]
        assert re.search(r"(?<!\\)%", command) is None  # an unescaped % would end the command
        lock = re.search(r"flock -n (\S+\.lock) ", command)
        assert lock and "/opt/kubectl-dr/bin/kubectl-dr --kubeconfig /home/ops/.kube/prod --context prod" in command
        assert re.search(r">> \S+\.log 2>&1$", command)
        names.add(lock.group(1))
    assert len(names) == 5  # each job its own lock
    assert "offsite\\%1" in text
    assert "etcd snapshots pull --repo s3://dr/prod --encrypt-to age1xyz --yes" in text
    assert "pvc backup data-db-1 -n shop --repo s3://dr/prod --encrypt-to age1xyz" in text
    assert "backups prune --keep-daily 7 --repo s3://dr/prod --yes" in text
    with pytest.raises(UsageError, match="--systemd"):
        client_jobs.crontab(jobs, ctx, "Europe/Berlin")


@pytest.mark.parametrize(("whats", "kwargs", "message"), [
    (["pvc-backup"], {}, "needs --pvc"),
    (["pvc-backup"], {"pvcs": ["data-db-0"]}, "give NAMESPACE/CLAIM"),
    (["copy"], {}, "needs --to"),
    (["prune"], {}, "needs at least one of --keep-last"),
    (["nightly"], {}, "unknown --what nightly"),
])
def test_print_refuses_incomplete_jobs(whats: list[str], kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"pvcs": [], "to": None, "encrypt_to": [], "keep": {}, **kwargs}
    with pytest.raises(UsageError, match=message):
        client_jobs.build(whats, ctx=_ctx(), cron_expr="@daily", **args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- schedule --dir
@pytest.mark.parametrize(("directory", "reason"), [
    ("/", "a system directory"),
    ("/etc", "a system directory"),
    ("/etc/kubernetes", "the control plane owns"),
    ("/etc/kubernetes/manifests/snaps", "the control plane owns"),
    ("/etc/kubernetes/pki", "the control plane owns"),
    ("/var/lib/etcd", "the control plane owns"),
    ("/var/lib/etcd/member/snap", "the control plane owns"),
    ("/srv/etcd-data", "the etcd data directory of a member"),
    ("/srv/etcd-data/snapshots", "the etcd data directory of a member"),
    ("/var/lib/kubelet/snaps", "the kubelet owns"),
    ("/usr", "a system directory"),
    ("/usr/local/snapshots", "a system directory"),
    ("/bin", "a system directory"),
    ("/sbin/x", "a system directory"),
    ("/lib", "a system directory"),
    ("/lib64/snaps", "a system directory"),
    ("/libx32", "a system directory"),
    ("/boot/etcd", "a system directory"),
    ("/proc/1", "a system directory"),
    ("/sys/fs", "a system directory"),
    ("/dev/shm/snaps", "a system directory"),
    ("/run/snapshots", "a system directory"),
    ("/var/lib/kubectl-dr", "kubectl dr's own"),
    ("/var/lib/kubectl-dr/restore", "kubectl dr's own"),
    ("/var/lib/kubectl-dr/restore/run-1", "kubectl dr's own"),
    ("snapshots", "not an absolute path"),
    ("./var/lib/snaps", "not an absolute path"),
    ("/var/lib/kubectl-dr/../etcd", "'..'"),
    ("/srv/snaps/..", "'..'"),
    ("//etc", "a system directory"),
    ("/etc/kubernetes/", "the control plane owns"),
])
def test_schedule_dir_refuses_system_and_own_directories(directory: str, reason: str) -> None:
    with pytest.raises(UsageError) as caught:
        etcd_job.check_directory(directory, data_dirs=["/srv/etcd-data"])
    assert reason in caught.value.message and repr(directory) in caught.value.message


@pytest.mark.parametrize("directory", [
    etcd_job.DEFAULT_DIR, "/var/lib/kubectl-dr/other", "/srv/etcd-snapshots", "/var/backups/etcd",
    "/etc-backups/etcd", "/var/lib/etcd-snapshots", "/var/lib/kubelet-snapshots", "/library/snaps", "/opt/dr",
    "/srv/etcd-data-snapshots", "/var/snaps/", "/var/lib/kubectl-dr/restored",
])
def test_schedule_dir_accepts_a_directory_of_its_own(directory: str) -> None:
    etcd_job.check_directory(directory, data_dirs=["/srv/etcd-data"])


def test_schedule_dir_finds_a_members_data_dir_through_its_host_path() -> None:
    """A cluster that keeps etcd's data elsewhere (kubeadm's etcd.local.dataDir): the node path is refused."""
    pod = {"metadata": {"name": "etcd-cp-1"}, "spec": {
        "volumes": [{"name": "etcd-data", "hostPath": {"path": "/srv/etcd", "type": "DirectoryOrCreate"}},
                    {"name": "etcd-certs", "hostPath": {"path": "/etc/kubernetes/pki/etcd"}}],
        "containers": [{"name": "etcd", "command": ["etcd", "--data-dir=/var/lib/etcd", "--name=cp-1"],
                        "volumeMounts": [{"name": "etcd-data", "mountPath": "/var/lib/etcd"},
                                         {"name": "etcd-certs", "mountPath": "/etc/kubernetes/pki/etcd"}]}]}}
    assert etcd_job.data_dir_of(pod) == "/srv/etcd"
    with pytest.raises(UsageError, match="is inside /srv/etcd, the etcd data directory of a member"):
        etcd_job.check_directory("/srv/etcd/snapshots", [etcd_job.data_dir_of(pod) or ""])
    etcd_job.check_directory("/srv/etcd-snapshots", ["/srv/etcd"])


def _need_systemd_analyze() -> None:
    """Checked with systemd's own parser where it is installed (CI installs it: there it must be)."""
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze not found (CI installs systemd: prerequisites must not be skipped)")
        pytest.skip("systemd-analyze is not installed: the structure was checked, not systemd's reading of it")


SAMPLES = ["0 */12 * * *", "*/5 1-3 * * MON-FRI", "30 2 * * *", "0 0 1 */3 *", "@weekly", "15 4 10-12 * *"]


def _calendar_runs(expression: str, base: dt.datetime, n: int) -> list[dt.datetime]:
    out = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}", f"--base-time=@{int(base.timestamp())}",
                          expression], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, check=True)
    times = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out.stdout)
    return [dt.datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for t in times]


@pytest.mark.parametrize("expr", SAMPLES)
def test_systemd_timers_fire_when_cron_would(expr: str) -> None:
    calendar = client_jobs.on_calendar(expr, None)
    assert re.fullmatch(r"(\w{3}(,\w{3})* )?\*-[\d*,]+-[\d*,]+ [\d*,]+:[\d*,]+:00", calendar), calendar
    expected, moment = [], T0
    for _ in range(6):
        nxt = cron.next_run(expr, None, moment)
        assert nxt is not None
        expected.append(nxt)
        moment = nxt
    _need_systemd_analyze()
    assert _calendar_runs(calendar, T0, 6) == expected


def test_systemd_units_verify(tmp_path: Path) -> None:
    ctx = _ctx()
    jobs = client_jobs.build(["etcd-pull"], ctx=ctx, cron_expr="30 2 * * *", pvcs=[], to=None, encrypt_to=[], keep={})
    files = client_jobs.systemd(jobs, "Europe/Berlin", user=False)
    assert sorted(Path(p).name for p in files) == ["kubectl-dr-etcd-pull.service", "kubectl-dr-etcd-pull.timer"]
    service, timer = (files[p] for p in sorted(files))
    assert "Type=oneshot" in service and "ExecStart=/usr/bin/flock -n /run/kubectl-dr-etcd-pull.lock " in service
    assert "OnCalendar=*-*-* 02:30:00 Europe/Berlin" in timer and "Persistent=true" in timer
    with pytest.raises(UsageError, match="ORs and systemd ANDs"):
        client_jobs.on_calendar("0 0 1 * MON", None)
    _need_systemd_analyze()
    for path, body in files.items():
        (tmp_path / Path(path).name).write_text(body)
    result = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------ node listing
def _sidecar(name: str, size: int, sha: str = "a" * 64, **extra: object) -> str:
    return json.dumps({"kind": scripts.SIDECAR_KIND, "name": name, "file": f"{name}.db", "size": size, "sha256": sha,
                       "takenAt": "2026-12-01T00:00:00Z", "revision": 7, "memberID": 2190249399692031495, **extra})


def test_listing_counts_only_snapshots_whose_sidecar_and_file_agree() -> None:
    text = "\n".join([
        "@@json s-1.json", _sidecar("s-1", 544),
        "@@json s-2.json", _sidecar("s-2", 1056),
        "@@json s-3.json", _sidecar("s-3", 544),
        "@@json s-4.json", "{not json",
        "@@json s-5.json", _sidecar("s-5", 544, file="../etc/passwd.db"),
        "@@db s-1.db 544", "@@db s-2.db 544", "@@db s-4.db 544", "@@db s-6.db 544", "@@db s-5.db 544",
    ])
    found = {s.file: s for s in parse_listing("cp-1", "/d", text)}
    assert found["s-1.db"].complete and found["s-1.db"].member_id == "1e6554397e27f607"
    assert found["s-1.db"].path == "/d/s-1.db"
    assert "its sidecar says 1056" in (found["s-2.db"].problem or "")
    assert "s-3.db is missing" in (found["s-3.db"].problem or "")
    assert "not valid JSON" in (found["s-4.db"].problem or "")
    assert "unexpected file" in (found["../etc/passwd.db"].problem or "")
    assert "no sidecar" in (found["s-6.db"].problem or "")
    assert [f for f, s in found.items() if s.complete] == ["s-1.db"]


# ------------------------------------------------------------------- the Job's script, real busybox
@pytest.fixture
def busybox_path(tmp_path: Path) -> str:
    if not Path(BUSYBOX).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{BUSYBOX} not found (CI: prerequisites must not be skipped)")
        pytest.skip(f"{BUSYBOX} not found")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        (bindir / applet).symlink_to(BUSYBOX)
    return str(bindir)  # PATH with busybox applets only, as in the busybox image


def _snapshot_bytes(seed: bytes, pages: int = 4) -> bytes:
    body = (hashlib.sha256(seed).digest() * 512)[: 512 * pages]
    return body + hashlib.sha256(body).digest()


def _finish(busybox_path: str, snaps: Path, info: Path, pod: str, taken: str, data: bytes, keep: int = 2,
            schedule: str = "nightly") -> subprocess.CompletedProcess[str]:
    (snaps / f".partial-{pod}.db").write_bytes(data)
    (info / "taken").write_text(taken + "\n")
    (info / "endpoint").write_text("https://127.0.0.1:2379\n")
    (info / "etcdctl-version").write_text("3.5.16\n")
    (info / "member.json").write_text('[{"Endpoint":"x","Status":{"header":{"cluster_id":1527212538201470694,'
                                      '"member_id":17,"revision":40,"raft_term":2},"version":"3.5.16"}}]\n')
    (info / "status.json").write_text('{"hash":123,"revision":41,"totalKey":9,"totalSize":2048}\n')
    script = scripts.finish_script(schedule, keep, snapshots=str(snaps), info=str(info))
    env = {"PATH": busybox_path, "POD_NAME": pod, "NODE_NAME": "cp-1", "ETCD_IMAGE": "registry.k8s.io/etcd:3.5.16-0"}
    return subprocess.run([f"{busybox_path}/sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)


def test_job_script_checks_renames_records_and_keeps_n(busybox_path: str, tmp_path: Path) -> None:
    snaps, info = tmp_path / "snaps", tmp_path / "info"
    snaps.mkdir()
    info.mkdir()
    (snaps / "weekly-20260101T000000Z.db").write_bytes(b"other schedule")
    (snaps / "weekly-20260101T000000Z.json").write_text("{}")
    stamps = ["2026-12-01T00:00:00Z", "2026-12-01T12:00:00Z", "2026-12-02T00:00:00Z"]
    datas = [_snapshot_bytes(s.encode()) for s in stamps]
    for i, (stamp, data) in enumerate(zip(stamps, datas, strict=True)):
        done = _finish(busybox_path, snaps, info, f"pod-{i}", stamp, data)
        assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in snaps.iterdir())
    assert names == ["nightly-20261201T120000Z.db", "nightly-20261201T120000Z.json", "nightly-20261202T000000Z.db",
                     "nightly-20261202T000000Z.json", "weekly-20260101T000000Z.db", "weekly-20260101T000000Z.json"]
    sidecar = json.loads((snaps / "nightly-20261202T000000Z.json").read_text())
    assert sidecar == {
        "apiVersion": "kubectl-dr/v1", "kind": "NodeEtcdSnapshot", "name": "nightly-20261202T000000Z",
        "file": "nightly-20261202T000000Z.db", "schedule": "nightly", "node": "cp-1", "pod": "pod-2",
        "image": "registry.k8s.io/etcd:3.5.16-0", "takenAt": "2026-12-02T00:00:00Z", "size": len(datas[2]),
        "sha256": hashlib.sha256(datas[2]).hexdigest(), "revision": 41, "totalKeys": 9, "hash": 123,
        "memberID": 17, "clusterID": 1527212538201470694, "endpoint": "https://127.0.0.1:2379",
        "etcdctlVersion": "3.5.16", "checks": ["size", "sha256-trailer", "etcdctl-snapshot-status"]}
    assert (snaps / "nightly-20261202T000000Z.db").read_bytes() == datas[2]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "SHA-256 trailer does not match"),
    (lambda d: d[:-1], "not a bbolt database plus its 32-byte SHA-256 trailer"),
    (lambda d: b"", "not a snapshot"),
])
def test_job_script_refuses_a_damaged_file_and_keeps_the_old_ones(busybox_path: str, tmp_path: Path,
                                                                  damage: object, message: str) -> None:
    snaps, info = tmp_path / "snaps", tmp_path / "info"
    snaps.mkdir()
    info.mkdir()
    assert _finish(busybox_path, snaps, info, "pod-a", "2026-12-01T00:00:00Z", _snapshot_bytes(b"a"), keep=1
                   ).returncode == 0
    bad = damage(_snapshot_bytes(b"b"))  # type: ignore[operator]
    failed = _finish(busybox_path, snaps, info, "pod-b", "2026-12-02T00:00:00Z", bad, keep=1)
    assert failed.returncode == 1 and message in failed.stderr
    # The failed run kept nothing and removed nothing: the older snapshot is still there.
    assert sorted(p.name for p in snaps.iterdir()) == ["nightly-20261201T000000Z.db", "nightly-20261201T000000Z.json"]
