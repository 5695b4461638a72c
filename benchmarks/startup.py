"""How long `kubectl-dr --help` and `kubectl-dr version --client` take (median of repeated runs).

    python benchmarks/startup.py [--runs 15]

The target is under 0.5 s for --help; sub-commands import their heavy libraries only when they run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def executable() -> str:
    beside = Path(sys.executable).parent / "kubectl-dr"
    return str(beside) if beside.exists() else (shutil.which("kubectl-dr") or "kubectl-dr")


def timed(args: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = executable()
    print(f"{'command':38} {'median':>8} {'min':>8} {'max':>8}")
    for cmd in (["--help"], ["version", "--client"], ["pvc", "--help"], ["etcd", "--help"]):
        samples = timed([exe, *cmd], args.runs)
        label = "kubectl-dr " + " ".join(cmd)
        print(f"{label:38} {statistics.median(samples):8.3f} {min(samples):8.3f} {max(samples):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
