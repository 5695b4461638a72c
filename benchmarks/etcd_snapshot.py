"""`kubectl dr etcd snapshot` (pod path and direct path) against plain `etcdctl snapshot save`.

One loopback cluster (1 control plane: a real TLS etcd member), its database grown to a few hundred MB
with large values, then in the same run: the real etcdctl 3.4 saving straight to a local file with the
member's healthcheck client certificate (no transfer, no verification: the floor), `kubectl dr etcd
snapshot` through a pod on the node (etcdctl in the pod, streamed back over exec, size and SHA-256 on
both sides, bbolt read, repository commit), and `kubectl dr etcd snapshot --endpoints` (etcd3 stream
from this machine, verified and committed). Peak RSS is the measured process's own (wait4 rusage).

    python -m benchmarks.etcd_snapshot              # ~300 MB database
    python -m benchmarks.etcd_snapshot --mb 50      # quick look
    python -m benchmarks.etcd_snapshot --mb 160 --before main   # also main's CLI, interleaved: before/after
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


# The CLI from the extracted tree: the editable install's finder (which would import this checkout whatever the
# path says) is dropped first.
BEFORE_MAIN = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
               "getattr(f, '__module__', '')]; sys.path.insert(0, {tree!r}); "
               "from kubectl_dr.cli.main import main; main()")


def before_tree(ref: str, work: Path) -> Path:
    """The kubectl_dr package of git `ref` (`git archive`), compiled as an install would be: run beside this
    checkout's CLI on the same data in the same run, so before and after see the same load."""
    root = Path(__file__).resolve().parent.parent
    tree = work / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "kubectl_dr"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "kubectl_dr")], check=True,
                   stdout=subprocess.DEVNULL)
    return tree


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
    parser.add_argument("--before", metavar="GIT_REF", help="also run the CLI of this git ref (before/after)")
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
        pod_tools: dict[str, tuple[list[str], dict[str, str]]] = {"kubectl dr etcd snapshot (pod)": ([dr], env)}
        if args.before:
            tree = before_tree(args.before, work)
            pod_tools[f"kubectl dr etcd snapshot (pod, {args.before})"] = (
                [sys.executable, "-c", BEFORE_MAIN.format(tree=str(tree))], env)
        tools: dict[str, tuple[list[str], dict[str, str]]] = {
            "etcdctl snapshot save": ([*ctl, "snapshot", "save", str(work / "plain.db")], ctl_env),
            **{name: ([*cli, "etcd", "snapshot"], cli_env) for name, (cli, cli_env) in pod_tools.items()},
            "kubectl dr etcd snapshot --endpoints": ([dr, "etcd", "snapshot", *direct], env),
        }
        results: dict[str, tuple[float, int]] = {}
        cpu: dict[str, float] = {}  # CPU seconds of the best run's process
        steps: dict[str, dict[str, float]] = {}  # of each pod-path tool's best run
        loads = [os.getloadavg()[0]]
        for _ in range(args.runs):
            for name, (cmd, cmd_env) in tools.items():
                (work / "plain.db").unlink(missing_ok=True)
                # The CLI's own start, just before: on a loaded machine it moves with the load.
                cli = pod_tools.get(name)
                start_up = measure([*cli[0], "version"], cli[1])[0] if cli else 0.0
                seconds, rss, used = measure(cmd, cmd_env)
                best = results.get(name)
                if best is None or seconds < best[0]:
                    cpu[name] = used
                    if cli:
                        steps[name] = {"total": seconds, "CLI start (kubectl dr version)": start_up,
                                       **pod_timings(repo)}
                results[name] = (min(seconds, best[0]) if best else seconds, max(rss, best[1]) if best else rss)
                shutil.rmtree(repo, ignore_errors=True)
            loads.append(os.getloadavg()[0])
        size = (work / "plain.db").stat().st_size if (work / "plain.db").exists() else 0
        if not size:
            subprocess.run(tools["etcdctl snapshot save"][0], env=ctl_env, check=True, capture_output=True)
            size = (work / "plain.db").stat().st_size
        floor = results["etcdctl snapshot save"][0]
        print(f"snapshot size: {size / 2**20:.1f} MiB, best of {args.runs} runs; 1-minute load average "
              f"{' → '.join(f'{x:.1f}' for x in loads)} (start, after each round)")
        print(f"{'tool':48} {'seconds':>8} {'MiB/s':>8} {'ratio':>7} {'peak RSS':>10} {'CPU-s':>6}")
        for name, (seconds, rss) in results.items():
            print(f"{name:48} {seconds:8.2f} {size / 2**20 / seconds:8.1f} {seconds / floor:6.2f}x "
                  f"{rss / 2**20:8.1f}Mi {cpu[name]:6.2f}")
        print("ratio = time / time(etcdctl snapshot save); above 1 is slower than the plain save; CPU-s: the "
              "measured process's own (user + system, wait4), not the pod's")
        for name, tool_steps in steps.items():
            total = tool_steps.pop("total")
            print(f"\nwhere {name}'s {total:.2f}s went (best run):")
            for step, seconds in tool_steps.items():
                print(f"  {step:44} {seconds:6.2f}s")
            # Steps taken beside the stream (their names say so) are not part of the sum.
            rest = total - sum(v for k, v in tool_steps.items() if "(beside the stream)" not in k)
            print(f"  {'the rest (API reads, repository, exit)':44} {rest:6.2f}s")
    finally:
        cluster.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
