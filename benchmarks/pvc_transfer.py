"""Backup and restore throughput of `kubectl dr pvc` against `kubectl exec … tar` and `kubectl cp`, same data,
same run, on a loopback cluster; plus the peak RSS of kubectl-dr at 1 GB and at 4 GB. The same backups also go
to an S3 server (SeaweedFS) and to Azure Blob storage (Azurite), both started for the run, plain and
age-encrypted, side by side with the local ones.

    python -m benchmarks.pvc_transfer [--gb 1] [--big-gb 4] [--rounds 3] [--dir /tmp/bench] [--skip-big]
                                      [--skip-s3] [--skip-azure] [--backups-only]

Not run by pytest. Every tool reads or writes the same volume through a busybox pod; the kubectl runs use
real kubectl 1.33. Peak RSS is that of the measured process alone (VmHWM, see PeakRss).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.installed import as_installed
from kubectl_dr.volumes import scripts
from kubectl_dr.volumes.scripts import DATA, SCRATCH
from tests import azurite as azurite_server
from tests.cli_runner import clean_env, executable, kubectl
from tests.cluster.fixture import start_cluster
from tests.datasets import build_mixed, make_claim, new_namespace, volume_dir, wipe
from tests.s3server import S3Server, start_seaweedfs, stop

GIB = 1 << 30
# kubectl exec running the pod script kubectl dr runs (tee, sha256sum and the counting dd around tar):
# the cost of the in-pod checks without kubectl dr's client, its verification pass or its own pod.
CHECKED = "kubectl exec +checks"
# kubectl dr's own timing of the stream alone (its JSON result), by run label: the rest of a run is
# fixed work (verification, pods, listing, tree check).
TRANSFER: dict[str, list[float]] = defaultdict(list)
LISTING: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (listing seconds, run seconds)
# The measured client's own CPU seconds by (way, tool): kubectl-dr's beside kubectl's during kubectl cp.
CLIENT_CPU: dict[tuple[str, str], list[float]] = defaultdict(list)


HZ = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[str, int, float]]:
    """pid → (command name, parent pid, CPU seconds so far) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ)
    return table


_S = TypeVar("_S", bound="_Sampler")


class _Sampler:
    """Calls `sample()` every `period` seconds in a thread, from `with` until the block ends."""

    period = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)

    def __enter__(self: _S) -> _S:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakRss(_Sampler):
    """The measured process's peak RSS (KiB): VmHWM from /proc, read every 20 ms, the last read kept.

    Not wait4's ru_maxrss: the kernel carries the high-water mark of the memory a process had before
    execve into it, and a child started by vfork (as subprocess and posix_spawn do) had its parent's
    memory. ru_maxrss would then report at least this script's own RSS. VmHWM belongs to the image
    after execve; the last read is the peak, as long as the peak is not in the last 20 ms.
    """

    period = 0.02

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.kib = 0

    def sample(self) -> None:
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    self.kib = int(line.split()[1])


class CpuProfile(_Sampler):
    """CPU seconds by command name of a process tree (sampled from /proc every 0.2 s while it runs).

    Roots: the measured process and the loopback cluster's server, whose children are the pods' processes
    (tar, tee, sha256sum, dd in the rescue pod). A process that lives less than a sample is missed, and one
    that exits loses at most its last 0.2 s: fine for finding where seconds go in a 10 s transfer.
    """

    def __init__(self, roots: list[int]) -> None:
        super().__init__()
        self.roots = roots
        self.start = _processes()
        self.seen: dict[int, tuple[str, int, float]] = {}

    def sample(self) -> None:
        table = _processes()
        keep = {r for r in self.roots if r in table}
        grew = True
        while grew:
            grew = False
            for pid, (_, ppid, _) in table.items():
                if ppid in keep and pid not in keep:
                    keep.add(pid)
                    grew = True
        for pid in keep:
            self.seen[pid] = table[pid]

    def by_command(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for pid, (comm, _, cpu) in self.seen.items():
            before = self.start.get(pid)
            totals[comm] += cpu - (before[2] if before and before[0] == comm else 0.0)
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


PROFILES: dict[str, dict[str, float]] = {}
# --profile DIR: kubectl-dr runs under py-spy, which leaves its samples there (collapsed stacks, one file a run).
# The sampler costs CPU of its own: the timings of such a run are not comparable with others.
SPY: Path | None = None


def _result(out: Path) -> Any:
    """kubectl dr's JSON result (py-spy, under --profile, says what it does on the same stdout)."""
    return json.loads("".join(ln for ln in out.read_text().splitlines(True) if not ln.startswith("py-spy>")))


def _spied(args: list[str], label: str) -> list[str]:
    if SPY is None or Path(args[0]).name != "kubectl-dr":
        return args
    out = SPY / f"{label.replace(' ', '-')}-{len(list(SPY.glob('*.txt')))}.txt"
    return [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--format", "raw", "--rate",
            "200", "-o", str(out), "--", *args]


def measure(args: list[str], *, stdin: Path | None = None, stdout: Path | None = None,
            env: dict[str, str] | None = None, profile: tuple[str, int] | None = None,
            stderr: bytearray | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process; raises if it fails.

    `profile=(label, server_pid)`: also record CPU seconds by command in PROFILES[label].
    `stderr`: receives what the process wrote there.
    """
    with contextlib.ExitStack() as files:
        fin = files.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        fout = files.enter_context(open(stdout, "wb")) if stdout else subprocess.DEVNULL
        start = time.monotonic()
        proc = subprocess.Popen(_spied(args, profile[0] if profile else "run"), stdin=fin, stdout=fout,
                                stderr=subprocess.PIPE, env=env)
        peak = files.enter_context(PeakRss(proc.pid))
        sampler = files.enter_context(CpuProfile([proc.pid, profile[1]])) if profile else None
        assert proc.stderr is not None
        err = proc.stderr.read()
        if stderr is not None:
            stderr.extend(err)
        # Stop reading /proc before the pid is reaped (and could be reused); a zombie reports no memory.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        peak.__exit__()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        if sampler is not None and profile is not None:
            sampler.__exit__()
            PROFILES[profile[0]] = sampler.by_command()
            # The measured process itself (kubectl-dr, or kubectl for the kubectl cp rows): exact, from wait4.
            name = Path(args[0]).name
            PROFILES[profile[0]]["kubectl" if name.startswith("kubectl.") else name] = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}… failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return seconds, peak.kib


def du_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class Bench:
    def __init__(self, cluster, ns: str, work: Path) -> None:  # type: ignore[no-untyped-def]
        self.cluster, self.ns, self.work = cluster, ns, work
        self.env = as_installed(clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_PROGRESS_INTERVAL": "30",
                                           "KUBECTL_DR_CONFIG": os.devnull}))
        self.k = [kubectl("1.33"), f"--kubeconfig={cluster.kubeconfig}", "-n", ns]
        self.repo = work / "repo"
        self.s3_env: dict[str, str] = {}  # what reaches the S3 and Azure servers of the run
        self.s3_server: S3Server | None = None
        self.azurite: azurite_server.Azurite | None = None
        self.recipient = ""
        # kubectl-dr's own CPU seconds (user + system, from wait4) by run label.
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def dr_backup_to(self, repo: str, label: str, *extra: str) -> tuple[float, int, dict[str, Any]]:
        """`kubectl dr pvc backup` into REPO: wall seconds, peak RSS and its JSON result; CPU in self.cpu."""
        out = self.work / "dr.json"
        s, rss = measure([executable(), "pvc", "backup", "data", "-n", self.ns, "--repo", repo, *extra, "-o", "json"],
                         stdout=out, env={**self.env, **self.s3_env}, profile=(label, self.server_pid))
        self.cpu[label].append(PROFILES[label]["kubectl-dr"])
        return s, rss, _result(out)

    def pod(self, up: bool) -> None:
        if not up:
            self.cluster.kubectl("delete", "pod", "-n", self.ns, "bench", "--ignore-not-found", "--grace-period=0")
            return
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench", "namespace": self.ns},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                    "name": "c", "image": "busybox", "command": ["sleep", "36000"],
                    "volumeMounts": [{"name": "d", "mountPath": DATA}, {"name": "s", "mountPath": SCRATCH}]}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                                {"name": "s", "emptyDir": {}}]}}
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        self.cluster.kubectl("wait", "-n", self.ns, "--for=condition=Ready", "pod/bench", "--timeout=120s")

    @property
    def server_pid(self) -> int:
        return int(self.cluster.state["server"]["pid"])

    def dr_backup(self, label: str) -> tuple[float, int, str]:
        s, rss, result = self.dr_backup_to(str(self.repo), label)
        TRANSFER[label].append(float(result["details"]["transfer"]["seconds"]))
        LISTING[label].append((float(result["details"]["transfer"]["listingSeconds"]), s))
        return s, rss, result["id"]

    def checked_backup(self, out: Path) -> float:
        """kubectl exec running kubectl dr's own pod script: the in-pod counting and hashing, no client."""
        err = bytearray()
        script = scripts.backup_script(scripts.BUSYBOX)
        s, _ = measure([*self.k, "exec", "bench", "--", *scripts.sh(script)], stdout=out, stderr=err)
        report = scripts.parse_report(bytes(err))
        assert report.size == out.stat().st_size and report.tar_exit == 0, report
        return s

    def checked_restore(self, archive: Path) -> float:
        err = bytearray()
        size = archive.stat().st_size
        script = scripts.restore_script(size, tar=scripts.BUSYBOX, keep_owners=True)
        s, _ = measure([*self.k, "exec", "-i", "bench", "--", *scripts.sh(script)], stdin=archive, stderr=err)
        report = scripts.parse_report(bytes(err))
        assert report.size == size and report.tar_exit == 0, report
        return s

    def dr_restore(self, backup_id: str, label: str) -> tuple[float, int]:
        out = self.work / "dr.json"
        s, rss = measure([executable(), "pvc", "restore", "data", "-n", self.ns, "--repo", str(self.repo), "--from",
                          backup_id, "--yes", "-o", "json"], stdout=out, env=self.env, profile=(label, self.server_pid))
        result = _result(out)
        TRANSFER[label].append(float(result["seconds"]))
        LISTING[label].append((float(result["listingSeconds"]), s))
        return s, rss


def start_s3(b: Bench, work: Path) -> str:
    """A SeaweedFS server for the run, a bucket warmed up, an age key pair: the s3:// repository to use."""
    import pyrage

    server = start_seaweedfs(work)
    b.s3_server = server
    bucket = server.new_bucket()
    # SeaweedFS allocates its volumes on the first writes: not part of what is measured.
    server.client().put_object(Bucket=bucket, Key="warm-up", Body=os.urandom(64 << 20))
    b.s3_env = server.env()
    b.recipient = str(pyrage.x25519.Identity.generate().to_public())
    return f"s3://{bucket}/bench"


def start_azure(b: Bench, work: Path) -> str:
    """An Azurite server for the run and a container: the azure:// repository to use (age key as for S3)."""
    import pyrage

    server = azurite_server.start(work)
    b.azurite = server
    container = server.new_container()
    b.s3_env.update(server.env())
    b.recipient = b.recipient or str(pyrage.x25519.Identity.generate().to_public())
    return f"azure://{container}/bench"


def run(args: argparse.Namespace) -> None:
    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cluster = start_cluster(work / "cluster", control_planes=1, workers=1)
    s3 = azurite = None
    try:
        ns = new_namespace(cluster, "bench")
        make_claim(cluster, ns)
        vol = volume_dir(cluster, ns)
        info = build_mixed(vol, int(args.gb * GIB))
        size = du_bytes(vol)
        print(f"data set: {info['files']} files, {size / GIB:.2f} GiB", file=sys.stderr)
        banner = subprocess.run(["busybox"], capture_output=True, text=True).stdout.splitlines()[:1]
        print(f"busybox image: {banner[0] if banner else 'unknown'}; kubectl 1.33; load {os.getloadavg()[0]:.2f}")
        b = Bench(cluster, ns, work)
        s3_repo = azure_repo = ""
        if not args.skip_s3:
            s3_repo = start_s3(b, work)
            s3 = b.s3_server
        if not args.skip_azure:
            azure_repo = start_azure(b, work)
            azurite = b.azurite
        # Each round runs every tool once, in the same order, so slow spells of the shared machine hit all
        # tools alike; the table shows the median round and the range.
        runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        s3_runs: dict[str, list[float]] = defaultdict(list)
        s3_rss: dict[str, int] = defaultdict(int)
        rss1 = rss1r = 0
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
            if b.repo.exists():
                shutil.rmtree(b.repo)
            s, rss, backup_id = b.dr_backup("backup mixed")
            rss1 = max(rss1, rss)
            runs["kubectl dr"]["backup"].append(s)
            for repo_url, store in ((s3_repo, "S3"), (azure_repo, "Azure")):
                if not repo_url:
                    continue
                for name, label, extra in ((f"backup → {store}", f"backup mixed {store.lower()}", ()),
                                           (f"backup → {store}, age", f"backup mixed {store.lower()} age",
                                            ("--encrypt-to", b.recipient))):
                    s, rss, _ = b.dr_backup_to(repo_url, label, *extra)
                    s3_runs[name].append(s)
                    s3_rss[name] = max(s3_rss[name], rss)
            if args.backups_only:
                continue
            b.pod(True)
            tarfile = work / "exec.tar"
            s, _ = measure([*b.k, "exec", "bench", "--", "tar", "-c", "-f", "-", "-C", "/data", "."], stdout=tarfile)
            runs["kubectl exec tar"]["backup"].append(s)
            runs[CHECKED]["backup"].append(b.checked_backup(work / "checked.tar"))
            cpdir = work / "cp"
            if cpdir.exists():
                shutil.rmtree(cpdir)
            s, _ = measure([*b.k, "cp", f"{ns}/bench:/data", str(cpdir)], profile=("kubectl cp out", b.server_pid))
            CLIENT_CPU["backup", "kubectl cp"].append(PROFILES["kubectl cp out"]["kubectl"])
            CLIENT_CPU["backup", "kubectl dr"].append(PROFILES["backup mixed"]["kubectl-dr"])
            runs["kubectl cp"]["backup"].append(s)
            if round_no == 1:
                print(f"kubectl cp copied {du_bytes(cpdir) / GIB:.2f} GiB", file=sys.stderr)

            b.pod(False)
            saved = work / "saved"
            if not saved.exists():
                vol.rename(saved)  # the original tree, put back after the restores
                vol.mkdir()
            wipe(vol)
            s, rss = b.dr_restore(backup_id, "restore mixed")
            rss1r = max(rss1r, rss)
            runs["kubectl dr"]["restore"].append(s)
            wipe(vol)
            b.pod(True)
            s, _ = measure([*b.k, "exec", "-i", "bench", "--", "tar", "-x", "-f", "-", "-C", "/data"], stdin=tarfile)
            runs["kubectl exec tar"]["restore"].append(s)
            wipe(vol)
            runs[CHECKED]["restore"].append(b.checked_restore(work / "checked.tar"))
            wipe(vol)
            s, _ = measure([*b.k, "cp", str(cpdir), f"{ns}/bench:/data/cp"], profile=("kubectl cp in", b.server_pid))
            CLIENT_CPU["restore", "kubectl cp"].append(PROFILES["kubectl cp in"]["kubectl"])
            CLIENT_CPU["restore", "kubectl dr"].append(PROFILES["restore mixed"]["kubectl-dr"])
            runs["kubectl cp"]["restore"].append(s)
            b.pod(False)
            tarfile.unlink()
            (work / "checked.tar").unlink()
            shutil.rmtree(cpdir)
            wipe(vol)
            vol.rmdir()
            saved.rename(vol)

        def mib_s(seconds: float) -> float:
            return size / seconds / 2**20

        if not args.backups_only:
            rows = {tool: {way: statistics.median(times) for way, times in r.items()} for tool, r in runs.items()}
            print(f"\n{args.rounds} rounds; MiB/s of the median round (slowest–fastest round):")
            print(f"{'tool':<22}{'backup MiB/s':>20}{'restore MiB/s':>24}{'backup ×cp':>12}{'restore ×cp':>13}")
            cp = rows["kubectl cp"]
            for tool, r in rows.items():
                cells = [f"{mib_s(r[w]):.1f} ({mib_s(max(runs[tool][w])):.0f}–{mib_s(min(runs[tool][w])):.0f})"
                         for w in ("backup", "restore")]
                print(f"{tool:<22}{cells[0]:>20}{cells[1]:>24}"
                      f"{cp['backup'] / r['backup']:>12.2f}{cp['restore'] / r['restore']:>13.2f}")
            cps, drs = runs["kubectl cp"], runs["kubectl dr"]
            per_round = [(c / d) for c, d in zip(cps["restore"], drs["restore"], strict=True)]
            per_round_b = [(c / d) for c, d in zip(cps["backup"], drs["backup"], strict=True)]
            print("×cp in each round: backup " + ", ".join(f"{x:.2f}" for x in per_round_b)
                  + "; restore " + ", ".join(f"{x:.2f}" for x in per_round))
            ex = rows["kubectl exec tar"]
            print(f"kubectl dr vs kubectl exec tar: backup ×{ex['backup'] / rows['kubectl dr']['backup']:.2f}, "
                  f"restore ×{ex['restore'] / rows['kubectl dr']['restore']:.2f}")
            stream = {label: mib_s(statistics.median(times)) for label, times in TRANSFER.items() if "mixed" in label}
            print("kubectl dr's stream alone (median, from its JSON result): "
                  + ", ".join(f"{label.split()[0]} {rate:.1f} MiB/s" for label, rate in stream.items()))
            for label, pairs in LISTING.items():
                if "mixed" in label:
                    share = statistics.median(listed / total for listed, total in pairs)
                    print(f"{label}: the pod's stat listings take {share:.1%} of the run (median)")
            print("client CPU-s per GiB (median; user + system from wait4), kubectl-dr beside kubectl during "
                  "kubectl cp of the same data: "
                  + "; ".join(f"{way} {statistics.median(CLIENT_CPU[way, 'kubectl dr']) / (size / GIB):.2f} against "
                              f"{statistics.median(CLIENT_CPU[way, 'kubectl cp']) / (size / GIB):.2f}"
                              for way in ("backup", "restore")))
        print(f"\npeak RSS kubectl-dr at {size / GIB:.2f} GiB: backup {rss1 / 1024:.1f} MiB"
              + ("" if args.backups_only else f", restore {rss1r / 1024:.1f} MiB"))
        if s3_runs:
            local = statistics.median(runs["kubectl dr"]["backup"])
            local_cpu = statistics.median(b.cpu["backup mixed"])
            print(f"\nkubectl dr pvc backup of the same {size / GIB:.2f} GiB, same rounds (median; kubectl-dr's own "
                  "CPU from wait4):")
            print(f"  {'to the local repository':<26}{mib_s(local):8.1f} MiB/s  ×local 1.00  "
                  f"{local_cpu / (size / GIB):5.2f} CPU-s/GiB  peak RSS {rss1 / 1024:.1f} MiB")
            for name, times in s3_runs.items():
                label = "backup mixed " + ("azure" if "Azure" in name else "s3") + (" age" if "age" in name else "")
                cpu = statistics.median(b.cpu[label])
                print(f"  {name:<26}{mib_s(statistics.median(times)):8.1f} MiB/s  "
                      f"×local {local / statistics.median(times):.2f}  {cpu / (size / GIB):5.2f} CPU-s/GiB  "
                      f"peak RSS {s3_rss[name] / 1024:.1f} MiB")
            for store in ("s3", "azure"):
                if b.cpu[f"backup mixed {store}"]:
                    age_cost = (statistics.median(b.cpu[f"backup mixed {store} age"])
                                - statistics.median(b.cpu[f"backup mixed {store}"]))
                    print(f"  age encryption ({store}): {age_cost / (size / GIB):+.2f} CPU-s/GiB in kubectl-dr")

        if not args.skip_big:
            wipe(vol)
            shutil.rmtree(b.repo)
            big = vol / "one-big-file"
            subprocess.run(["dd", "if=/dev/urandom", f"of={big}", "bs=16M", f"count={int(args.big_gb * 64)}",
                            "status=none"], check=True)
            size4 = args.big_gb * GIB
            s4, rss4, backup4 = b.dr_backup("backup one big file")
            print(f"peak RSS kubectl-dr at {args.big_gb:g} GiB (one file): backup {rss4 / 1024:.1f} MiB "
                  f"({size4 / s4 / 2**20:.1f} MiB/s), growth from {size / GIB:.2f} GiB of mixed files "
                  f"{(rss4 - rss1) / 1024:+.1f} MiB")
            if not args.backups_only:
                wipe(vol)
                s4r, rss4r = b.dr_restore(backup4, "restore one big file")  # the volume holds the file again
                print(f"  restore {rss4r / 1024:.1f} MiB ({size4 / s4r / 2**20:.1f} MiB/s), growth from "
                      f"{size / GIB:.2f} GiB of mixed files {(rss4r - rss1r) / 1024:+.1f} MiB")
            for repo_url, store in ((s3_repo, "S3"), (azure_repo, "Azure")):
                if not repo_url:
                    continue
                for name, label, extra in ((f"backup → {store}", f"backup one big file {store.lower()}", ()),
                                           (f"backup → {store}, age", f"backup one big file {store.lower()} age",
                                            ("--encrypt-to", b.recipient))):
                    s4o, rss4o, _ = b.dr_backup_to(repo_url, label, *extra)
                    cpu = b.cpu[label][-1]
                    print(f"  {name:<22} peak RSS {rss4o / 1024:.1f} MiB, {size4 / s4o / 2**20:.1f} MiB/s, "
                          f"×local {s4 / s4o:.2f}, {cpu / args.big_gb:.2f} CPU-s/GiB; growth from "
                          f"{size / GIB:.2f} GiB of mixed files: {(rss4o - s3_rss[name]) / 1024:+.1f} MiB")
        print("\nCPU seconds by process during the kubectl dr runs (the rescue pod's processes, the loopback "
              "API server relaying the stream as `python`, and kubectl-dr itself):")
        for label, totals in PROFILES.items():
            shown = ", ".join(f"{comm} {cpu:.1f}" for comm, cpu in totals.items() if cpu >= 0.1)
            print(f"  {label}: {shown}")
    finally:
        if s3 is not None:
            stop(s3)
        if azurite is not None:
            azurite_server.stop(azurite)
        cluster.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="size of the mixed data set (GiB)")
    parser.add_argument("--big-gb", type=float, default=4.0, help="size of the one-file data set for RSS (GiB)")
    parser.add_argument("--dir", default="/tmp/kubectl-dr-bench", help="work directory (removed first)")
    parser.add_argument("--skip-big", action="store_true", help="skip the 4 GiB run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every tool on the mixed data (median shown)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--skip-s3", action="store_true", help="no backups to the S3 server beside the local ones")
    parser.add_argument("--skip-azure", action="store_true", help="no backups to Azurite beside the local ones")
    parser.add_argument("--backups-only", action="store_true",
                        help="only kubectl dr's backups (local, S3, Azure): no kubectl rows, no restores")
    parser.add_argument("--profile", help="a directory for py-spy's samples of every kubectl dr run (slows them)")
    args = parser.parse_args()
    if args.profile:
        global SPY
        SPY = Path(args.profile)
        SPY.mkdir(parents=True, exist_ok=True)
    run(args)


if __name__ == "__main__":
    main()
