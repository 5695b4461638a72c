"""restic repositories against the plain repository, same data, same run, on a loopback cluster: the first
backup's time, then rounds of "change 1 % of the files, back up again" (time and bytes that crossed the
API), the repository's size after all rounds against one full backup, and restores of the latest snapshot
onto the volume after 1 % of its files changed: incremental (bytes sent, time), --full, and `kubectl cp` of
the whole tree into a pod (kubectl 1.33) in the same run.

    python -m benchmarks.restic_incremental [--gb 0.25] [--rounds 3] [--dir /tmp/bench-restic] [--profile DIR]

Not run by pytest. Every backup is `kubectl dr pvc backup` as a user runs it (a process of its own). Each
command's CPU-seconds are given beside its time, ours (the `kubectl dr` process) and the cluster's (the
loopback API server and every pod process it reaped: what the rescue pod's tar, stat and sha256sum cost),
because the shared machine's load makes wall-clock times vary. `--profile DIR` runs each `kubectl dr`
under py-spy and leaves one flame graph (SVG) per command in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.cli_runner import clean_env, executable, kubectl
from tests.cluster.fixture import start_cluster
from tests.datasets import build_mixed, make_claim, new_namespace, volume_dir

GIB = 1 << 30
PASSWORD = "benchmark"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


PROFILE: Path | None = None
PYCACHE: Path | None = None  # the package's bytecode, compiled once before the timed commands
CPU: list[tuple[str, float, float, float, float]] = []  # (label, wall s, our CPU s, cluster's CPU s, peak RSS MiB)


def _cluster_cpu(cluster: Any) -> float:
    """CPU-seconds of the loopback cluster's server and of the children it reaped (the pods' processes)."""
    pid = cluster.state.get("server", {}).get("pid")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def with_bytecode(env: dict[str, str]) -> dict[str, str]:
    """Commands run as an installed kubectl-dr starts (pip and the release build compile its bytecode when
    installing), not as a source tree under PYTHONDONTWRITEBYTECODE, which compiles every module of the
    package again in every process (0.3-0.4 CPU-s each on the shared machine): a bytecode cache of the run's
    own, outside the source tree, compiled before the first timed command (`compile_package`)."""
    env = dict(env)
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def compile_package(work: Path) -> None:
    global PYCACHE
    import kubectl_dr  # the package the commands import (a copy of an older tree on PYTHONPATH, when given)

    PYCACHE = work / "pycache"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(kubectl_dr.__file__).parent)],
                   env=with_bytecode(dict(os.environ)), check=True, stdout=subprocess.DEVNULL)


def dr(cluster: Any, *args: str, label: str = "") -> tuple[float, dict[str, Any]]:
    env = with_bytecode(clean_env({"KUBECONFIG": str(cluster.kubeconfig), "RESTIC_PASSWORD": PASSWORD}))
    command = [executable(), "--yes", *args, "-o", "json"]
    if PROFILE is not None:
        svg = PROFILE / f"{len(CPU):02d}-{label or args[1]}.svg"
        spy = str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--subprocesses", "--nonblocking", "-o", str(svg), "--", *command]
    theirs = _cluster_cpu(cluster)
    start = time.monotonic()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        out = threading.Thread(target=lambda: stdout.append(proc.stdout.read() if proc.stdout else ""))
        stdout: list[str] = []
        out.start()
        assert proc.stderr is not None
        for line in proc.stderr:  # each message with the time it came: where a command's time goes
            print(f"  +{time.monotonic() - start:6.1f}s {line.rstrip()}", file=sys.stderr)
        out.join()
        # wait4: this command's own CPU time and peak RSS (RUSAGE_CHILDREN's peak is the largest child's so far)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.monotonic() - start
    CPU.append((label or " ".join(args[:2]), took, usage.ru_utime + usage.ru_stime, _cluster_cpu(cluster) - theirs,
                usage.ru_maxrss / 1024))
    if proc.returncode != 0:
        raise SystemExit(f"kubectl dr {' '.join(args)} failed (exit {proc.returncode})")
    # py-spy says what it does on stdout too: the result is the JSON document after its lines
    return took, json.loads("".join(line for line in stdout[0].splitlines(True) if not line.startswith("py-spy>")))


def change_files(vol: Path, share: float, rng: random.Random) -> int:
    files = sorted(p for p in vol.rglob("*") if p.is_file())
    chosen = rng.sample(files, max(1, int(len(files) * share)))
    changed = 0
    for path in chosen:
        size = path.stat().st_size
        with open(path, "r+b") as f:  # rewrite one block in place, as a database does
            f.seek(rng.randrange(max(1, size - 4096)))
            f.write(rng.randbytes(min(4096, size)))
        changed += size
    return changed


def kubectl_cp(cluster: Any, ns: str, tree: Path) -> float:
    """`kubectl cp` of a local copy of the whole tree into a pod that mounts the claim (then removed)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cp", "namespace": ns},
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
               "name": "c", "image": "busybox", "command": ["sleep", "36000"],
               "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
               "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/cp", "--timeout=120s")
    start = time.monotonic()
    subprocess.run([kubectl("1.33"), f"--kubeconfig={cluster.kubeconfig}", "-n", ns, "cp", str(tree), "cp:/data/cp"],
                   check=True, capture_output=True, timeout=3600)
    took = time.monotonic() - start
    cluster.kubectl("exec", "-n", ns, "cp", "--", "rm", "-rf", "/data/cp")
    cluster.kubectl("delete", "pod", "-n", ns, "cp", "--grace-period=0")
    return took


def rewrite_pages(files: list[Path], rng: random.Random) -> None:
    """Four 4 KiB pages rewritten in place in each file, its mtime put back, as a database may."""
    for path in files:
        old = path.stat()
        with open(path, "r+b") as f:
            for _ in range(4):
                f.seek(rng.randrange(old.st_size - 4096))
                f.write(rng.randbytes(4096))
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def database_restore(cluster: Any, ns: str, vol: Path, repo: Path, n: int, rng: random.Random) -> None:
    """The latest snapshot restored onto a volume where N of the 64 MiB files differ in four pages each."""
    big = sorted(p for p in vol.rglob("*") if p.is_file() and p.stat().st_size >= 64 << 20)[:n]
    rewrite_pages(big, rng)
    took, result = dr(cluster, "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{repo}", "--from", "latest",
                      label="restore-database")
    inc = result["incremental"]
    sent = inc["streamBytes"] + inc.get("inPlaceStreamBytes", 0)
    print(f"database restore ({len(big)} files of 64 MiB, four 4 KiB pages rewritten in each): {took:.1f}s, "
          f"{sent / (1 << 20):.1f} MiB sent across the API (tar stream {inc['streamBytes'] / (1 << 20):.1f} MiB, "
          f"chunks in place {inc.get('inPlaceStreamBytes', 0) / (1 << 20):.1f} MiB), "
          f"{inc.get('bytesReusedInPlace', 0) / (1 << 20):.1f} MiB reused in place")


def print_cpu() -> None:
    print("CPU-seconds per command (wall, kubectl dr, cluster incl. pods; peak RSS of kubectl dr):")
    for label, wall, ours, theirs, rss in CPU:
        print(f"  {label:20} {wall:6.1f}s wall {ours:6.1f} CPU-s ours {theirs:6.1f} CPU-s cluster {rss:6.1f} MiB")


def print_backups(plain_s: float, first_s: float, first: dict[str, Any],
                  rounds: list[tuple[float, int, int, int]]) -> None:
    print(f"first backup: plain repository {plain_s:.1f}s, restic {first_s:.1f}s "
          f"(throughput ratio {plain_s / first_s:.2f}x), {first['receivedBytes'] / GIB:.3f} GiB read")
    for i, (took, received, stored, changed) in enumerate(rounds, 1):
        print(f"round {i} (1 % of files changed, {changed / (1 << 20):.1f} MiB of them): {took:.1f}s "
              f"({took / first_s:.0%} of the first), {received / (1 << 20):.1f} MiB crossed the API "
              f"({received / first['receivedBytes']:.1%}), {stored / (1 << 20):.1f} MiB stored")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/bench-restic")
    parser.add_argument("--profile", help="a directory for one py-spy flame graph per kubectl dr command")
    parser.add_argument("--database", type=int, default=0, metavar="N",
                        help="then a round that rewrites four 4 KiB pages in each of N of the 64 MiB files only "
                             "(a database's few changed pages: compared chunk by chunk in the pod)")
    parser.add_argument("--database-restore", type=int, default=0, metavar="N",
                        help="then four 4 KiB pages rewritten in each of N of the 64 MiB files and the latest "
                             "snapshot restored onto them (only their differing chunks written in place)")
    parser.add_argument("--no-restore", action="store_true", help="no restore after 1 %% of the files changed")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="run the commands without a bytecode cache (as this run's environment says)")
    args = parser.parse_args()
    global PROFILE
    if args.profile:
        PROFILE = Path(args.profile)
        PROFILE.mkdir(parents=True, exist_ok=True)
    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if not args.no_bytecode:
        compile_package(work)
    cluster = start_cluster(work / "cluster", control_planes=1, workers=1)
    try:
        ns = new_namespace(cluster, "bench")
        make_claim(cluster, ns)
        vol = volume_dir(cluster, ns)
        info = build_mixed(vol, int(args.gb * GIB))
        data = du(vol)
        print(f"data set: {info['files']} files, {data / GIB:.3f} GiB; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        plain_s, _ = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", str(work / "plain"),
                         label="backup-plain")
        restic_repo = work / "restic"
        first_s, first = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                           label="backup-first")
        one_full = du(restic_repo)
        rng = random.Random(7)
        rounds = []
        for _ in range(args.rounds):
            changed = change_files(vol, 0.01, rng)
            took, result = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                              label="backup-incremental")
            rounds.append((took, result["receivedBytes"], result["storedBytes"], changed))
        if args.database:
            big = sorted(p for p in vol.rglob("*") if p.is_file() and p.stat().st_size >= 64 << 20)[:args.database]
            for path in big:
                with open(path, "r+b") as f:
                    for _ in range(4):
                        f.seek(rng.randrange(path.stat().st_size - 4096))
                        f.write(rng.randbytes(4096))
            took, result = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                              label="backup-database")
            print(f"database round ({len(big)} files of 64 MiB, four 4 KiB pages rewritten in each): {took:.1f}s "
                  f"({took / first_s:.0%} of the first), {result['receivedBytes'] / (1 << 20):.1f} MiB crossed the "
                  f"API, {result['storedBytes'] / (1 << 20):.1f} MiB stored; block comparison: "
                  f"{result.get('blocks') or 'none'}")
        if args.database_restore:
            database_restore(cluster, ns, vol, restic_repo, args.database_restore, rng)
        if args.no_restore:
            print_backups(plain_s, first_s, first, rounds)
            print(f"repository after {args.rounds + 1} backups: {du(restic_repo) / one_full:.2f}x one full backup")
            print_cpu()
            return
        # The restore case: 1 % of the files changed once more, then the latest snapshot restored onto them.
        copy = work / "tree"
        shutil.copytree(vol, copy, symlinks=True)
        changed = change_files(vol, 0.01, rng)
        load = os.getloadavg()[0]
        inc_s, inc = dr(cluster, "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                        "--from", "latest", label="restore-incremental")
        change_files(vol, 0.01, random.Random(11))
        full_s, full = dr(cluster, "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                          "--from", "latest", "--full", label="restore-full")
        cp_s = kubectl_cp(cluster, ns, copy)
        print_backups(plain_s, first_s, first, rounds)
        print(f"repository after {args.rounds + 1} backups: {du(restic_repo) / one_full:.2f}x one full backup")
        moved = inc["incremental"]["streamBytes"]
        print(f"restore after 1 % of the files changed ({changed / (1 << 20):.1f} MiB of them; load {load:.2f}): "
              f"incremental {inc_s:.1f}s, {moved / (1 << 20):.2f} MiB sent ({moved / full['size']:.2%} of the full "
              f"restore's {full['size'] / GIB:.3f} GiB), {inc['incremental']['filesSent']} files sent, "
              f"{inc['incremental']['filesSkipped']} skipped; --full {full_s:.1f}s; kubectl cp of the tree "
              f"{cp_s:.1f}s (incremental is {cp_s / inc_s:.1f}x faster than kubectl cp)")
        print_cpu()
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
