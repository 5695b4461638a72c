"""The fixed cost of a command that talks to the cluster: `kubectl dr version` and `kubectl dr pvc list -n NS`
against a loopback cluster, wall and CPU seconds (the child's user+sys, from wait4), median of N runs.

    python -m benchmarks.kube_start [--runs 10] [--tree before=DIR --tree after=DIR]

Each `--tree` is a source tree of the package (e.g. `git archive COMMIT kubectl_dr | tar -x -C DIR`), run as
`python -m kubectl_dr` from the same interpreter, so two versions are compared on the same cluster in the same
run: the trees take turns run by run (ABAB…), so a change in the machine's load falls on both. Without
`--tree`, the installed package. A first unmeasured run of each tree writes its bytecode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster.fixture import start_cluster
from tests.datasets import make_claim, new_namespace


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    # Not from the repository's directory: `python -m` puts the working directory first on sys.path, and the
    # checkout's kubectl_dr/ would shadow the tree under test.
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    if process.stderr:
        process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR: a source tree holding kubectl_dr/")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"installed": ""}
    with tempfile.TemporaryDirectory(prefix="kube-start-") as work:
        cluster = start_cluster(Path(work) / "cluster")
        try:
            ns = new_namespace(cluster, "start")
            make_claim(cluster, ns)
            commands = {"version": ["version"], "pvc list": ["pvc", "list", "-n", ns]}
            base = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_CONFIG": "/dev/null"}

            def argv(tree: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
                env = dict(base)
                if trees[tree]:
                    env["PYTHONPATH"] = str(Path(trees[tree]).resolve())
                return [sys.executable, "-m", "kubectl_dr", *command], env

            for tree in trees:  # the tree asked for is the tree that runs
                probe = argv(tree, [])[1]
                where = subprocess.run([sys.executable, "-c", "import kubectl_dr; print(kubectl_dr.__file__)"],
                                       env=probe, cwd="/", capture_output=True, text=True, check=True).stdout
                print(f"{tree}: {where.strip()}")

            samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for tree in trees:
                for command in commands.values():
                    timed(*argv(tree, command))  # bytecode, page cache
            load_before = os.getloadavg()[0]
            for _ in range(args.runs):
                for label, command in commands.items():
                    for tree in trees:
                        samples.setdefault((label, tree), []).append(timed(*argv(tree, command)))
            load_after = os.getloadavg()[0]
        finally:
            cluster.down()
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; {args.runs} runs each")
    print(f"{'command':10} {'tree':10} {'wall median':>12} {'wall range':>14} {'CPU median':>11} {'CPU range':>14}")
    for (label, tree), values in samples.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"{label:10} {tree:10} {statistics.median(walls):12.3f} {min(walls):6.3f}–{max(walls):<7.3f}"
              f" {statistics.median(cpus):11.3f} {min(cpus):6.3f}–{max(cpus):<7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
