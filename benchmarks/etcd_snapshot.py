"""`kubectl dr etcd snapshot` (pod path and direct path) against plain `etcdctl snapshot save`.

One loopback cluster (1 control plane: a real TLS etcd member), its database grown to a few hundred MB
with large values, then in the same run: the real etcdctl 3.4 saving straight to a local file with the
member's healthcheck client certificate (no transfer, no verification: the floor), `kubectl dr etcd
snapshot` through a pod on the node (etcdctl in the pod, streamed back over exec, size and SHA-256 on
both sides, bbolt read, repository commit), and `kubectl dr etcd snapshot --endpoints` (etcd3 stream
from this machine, verified and committed). Peak RSS is the measured process's own (wait4 rusage).

    python -m benchmarks.etcd_snapshot              # ~300 MB database
    python -m benchmarks.etcd_snapshot --mb 50      # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.installed import as_installed
from tests.cli_runner import clean_env, executable
from tests.cluster.fixture import start_cluster
from tests.unit.etcd_scratch import ETCDCTL

VALUE_SIZE = 1 << 20  # 1 MiB: under etcd's default 1.5 MiB request limit


def measure(args: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    """Wall time, peak RSS (bytes) and CPU seconds (user + system) of one process; fails loudly on a
    non-zero exit."""
    start = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed:\n{stderr}")
    return seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def pod_timings(repo: Path) -> dict[str, float]:
    """The steps the newest pod-path snapshot in the repository recorded."""
    newest = max((json.loads(m.read_text()) for m in repo.glob("*/manifest.json")),
                 key=lambda m: str(m.get("created") or m.get("id")), default=None)
    details = (newest or {}).get("details") or {}
    return {str(k): float(v) for k, v in (details.get("timings") or {}).items()}


def fill(etcdctl: list[str], megabytes: int, env: dict[str, str]) -> None:
    """Large random values through etcdctl put (stdin), one MiB each."""
    for i in range(megabytes):
        subprocess.run([*etcdctl, "put", f"/bench/value-{i:05d}"], input=os.urandom(VALUE_SIZE // 2).hex().encode(),
                       env=env, check=True, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300, help="MiB of values to put (default 300)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each tool; the best is reported")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dr-bench-etcd-"))
    cluster = start_cluster(work / "cluster", control_planes=1, workers=0)
    try:
        member = cluster.members[0]
        pki = cluster.layout.etcd_pki(member.name)
        tls = [f"--cacert={pki / 'ca.crt'}", f"--cert={pki / 'healthcheck-client.crt'}",
               f"--key={pki / 'healthcheck-client.key'}"]
        ctl = [ETCDCTL, f"--endpoints={member.client_url}", *tls]
        ctl_env = {**os.environ, "ETCDCTL_API": "3"}
        t0 = time.monotonic()
        fill(ctl, args.mb, ctl_env)
        print(f"filled {args.mb} MiB in {time.monotonic() - t0:.1f}s", file=sys.stderr)

        repo = work / "repo"
        env = as_installed(clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_REPO": str(repo)}))
        dr = executable()
        direct = ["--endpoints", member.client_url, "--cacert", str(pki / "ca.crt"),
                  "--cert", str(pki / "healthcheck-client.crt"), "--key", str(pki / "healthcheck-client.key")]
        tools = {
            "etcdctl snapshot save": [*ctl, "snapshot", "save", str(work / "plain.db")],
            "kubectl dr etcd snapshot (pod)": [dr, "etcd", "snapshot"],
            "kubectl dr etcd snapshot --endpoints": [dr, "etcd", "snapshot", *direct],
        }
        results: dict[str, tuple[float, int]] = {}
        cpu: dict[str, float] = {}  # CPU seconds of the best run's process
        steps: dict[str, float] = {}  # of the best pod-path run
        for _ in range(args.runs):
            for name, cmd in tools.items():
                (work / "plain.db").unlink(missing_ok=True)
                # The CLI's own start, just before: on a loaded machine it moves with the load.
                start_up = measure([dr, "version"], env)[0] if cmd[0] == dr else 0.0
                seconds, rss, used = measure(cmd, ctl_env if cmd[0] == ETCDCTL else env)
                best = results.get(name)
                if best is None or seconds < best[0]:
                    cpu[name] = used
                if cmd[1:] == ["etcd", "snapshot"] and (best is None or seconds < best[0]):
                    steps = {"total": seconds, "CLI start (kubectl dr version)": start_up, **pod_timings(repo)}
                results[name] = (min(seconds, best[0]) if best else seconds, max(rss, best[1]) if best else rss)
            shutil.rmtree(repo, ignore_errors=True)
        size = (work / "plain.db").stat().st_size if (work / "plain.db").exists() else 0
        if not size:
            subprocess.run(tools["etcdctl snapshot save"], env=ctl_env, check=True, capture_output=True)
            size = (work / "plain.db").stat().st_size
        floor = results["etcdctl snapshot save"][0]
        print(f"snapshot size: {size / 2**20:.1f} MiB, best of {args.runs} runs")
        print(f"{'tool':40} {'seconds':>8} {'MiB/s':>8} {'ratio':>7} {'peak RSS':>10} {'CPU-s':>6}")
        for name, (seconds, rss) in results.items():
            print(f"{name:40} {seconds:8.2f} {size / 2**20 / seconds:8.1f} {seconds / floor:6.2f}x "
                  f"{rss / 2**20:8.1f}Mi {cpu[name]:6.2f}")
        print("ratio = time / time(etcdctl snapshot save); above 1 is slower than the plain save; CPU-s: the "
              "measured process's own (user + system, wait4), not the pod's")
        if steps:
            total = steps.pop("total")
            print(f"\nwhere the pod path's {total:.2f}s went (best run; the save itself is inside the pod start):")
            for step, seconds in steps.items():
                print(f"  {step:44} {seconds:6.2f}s")
            rest = total - sum(steps.values())
            print(f"  {'the rest (API reads, repository, exit)':44} {rest:6.2f}s")
            moving = steps.get("pod start and etcdctl snapshot save", 0) + steps.get("stream (hash beside it)", 0)
            print(f"  fixed (all but the pod's start and save, and the stream) ≈ {total - moving:.2f}s")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
