"""restic repositories against the plain repository, same data, same run, on a loopback cluster: the first
backup's time, then rounds of "change 1 % of the files, back up again" (time and bytes that crossed the
API), the repository's size after all rounds against one full backup, and restores of the latest snapshot
onto the volume after 1 % of its files changed: incremental (bytes sent, time), --full, and `kubectl cp` of
the whole tree into a pod (kubectl 1.33) in the same run.

    python -m benchmarks.restic_incremental [--gb 0.25] [--rounds 3] [--dir /tmp/bench-restic]

Not run by pytest. Every backup is `kubectl dr pvc backup` as a user runs it (a process of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
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


def dr(cluster: Any, *args: str) -> tuple[float, dict[str, Any]]:
    env = clean_env({"KUBECONFIG": str(cluster.kubeconfig), "RESTIC_PASSWORD": PASSWORD})
    start = time.monotonic()
    proc = subprocess.run([executable(), "--yes", *args, "-o", "json"], env=env, capture_output=True, text=True,
                          timeout=3600)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"kubectl dr {' '.join(args)} failed:\n{proc.stderr}")
    return took, json.loads(proc.stdout)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/bench-restic")
    args = parser.parse_args()
    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cluster = start_cluster(work / "cluster", control_planes=1, workers=1)
    try:
        ns = new_namespace(cluster, "bench")
        make_claim(cluster, ns)
        vol = volume_dir(cluster, ns)
        info = build_mixed(vol, int(args.gb * GIB))
        data = du(vol)
        print(f"data set: {info['files']} files, {data / GIB:.3f} GiB; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        plain_s, _ = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", str(work / "plain"))
        restic_repo = work / "restic"
        first_s, first = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{restic_repo}")
        one_full = du(restic_repo)
        rng = random.Random(7)
        rounds = []
        for _ in range(args.rounds):
            changed = change_files(vol, 0.01, rng)
            took, result = dr(cluster, "pvc", "backup", "data", "-n", ns, "--repo", f"restic:{restic_repo}")
            rounds.append((took, result["receivedBytes"], result["storedBytes"], changed))
        # The restore case: 1 % of the files changed once more, then the latest snapshot restored onto them.
        copy = work / "tree"
        shutil.copytree(vol, copy, symlinks=True)
        changed = change_files(vol, 0.01, rng)
        load = os.getloadavg()[0]
        inc_s, inc = dr(cluster, "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                        "--from", "latest")
        change_files(vol, 0.01, random.Random(11))
        full_s, full = dr(cluster, "pvc", "restore", "data", "-n", ns, "--repo", f"restic:{restic_repo}",
                          "--from", "latest", "--full")
        cp_s = kubectl_cp(cluster, ns, copy)
        print(f"first backup: plain repository {plain_s:.1f}s, restic {first_s:.1f}s "
              f"(throughput ratio {plain_s / first_s:.2f}x), {first['receivedBytes'] / GIB:.3f} GiB read")
        for i, (took, received, stored, changed) in enumerate(rounds, 1):
            print(f"round {i} (1 % of files changed, {changed / (1 << 20):.1f} MiB of them): {took:.1f}s "
                  f"({took / first_s:.0%} of the first), {received / (1 << 20):.1f} MiB crossed the API "
                  f"({received / first['receivedBytes']:.1%}), {stored / (1 << 20):.1f} MiB stored")
        print(f"repository after {args.rounds + 1} backups: {du(restic_repo) / one_full:.2f}x one full backup")
        moved = inc["incremental"]["streamBytes"]
        print(f"restore after 1 % of the files changed ({changed / (1 << 20):.1f} MiB of them; load {load:.2f}): "
              f"incremental {inc_s:.1f}s, {moved / (1 << 20):.2f} MiB sent ({moved / full['size']:.2%} of the full "
              f"restore's {full['size'] / GIB:.3f} GiB), {inc['incremental']['filesSent']} files sent, "
              f"{inc['incremental']['filesSkipped']} skipped; --full {full_s:.1f}s; kubectl cp of the tree "
              f"{cp_s:.1f}s (incremental is {cp_s / inc_s:.1f}x faster than kubectl cp)")
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
