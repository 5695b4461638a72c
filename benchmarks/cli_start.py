"""The CLI's fixed start cost: this checkout against another version of the sources, back to back.

    git archive COMMIT | tar -x -C /tmp/before        # the version to compare with
    python -m benchmarks.cli_start --before /tmp/before [--runs 10]

Each command runs `--runs` times in each tree, the two trees alternating (which goes first swaps every
round, so a load that comes and goes hits both alike): wall time and the process's own CPU seconds (user +
system, from wait4), median and range. Both trees run from compiled bytecode, as an install does
(benchmarks/installed.py), through the same interpreter and the same installed dependencies; only the
package's sources differ (PYTHONPATH, and the tree as the working directory: `python -c` puts it
first on sys.path). `version` talks to a loopback cluster started for the run (or
`--kubeconfig`); `backups list` reads a local repository of a few small backups made for the run. Then
`python -X importtime` of `--help` and of `version --client`: the sum of the top-level imports' cumulative
times, and the imports that cost most.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY = "from kubectl_dr.cli.main import main; main()"


def _env(source: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "KUBECONFIG", "KUBECTL_DR_REPO", "_")}
    env["PYTHONPATH"] = str(source)
    env.update(extra)
    return env


def _compile(source: Path) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(source / "kubectl_dr")], check=True,
                   stdout=subprocess.DEVNULL, env=_env(source, {}))


def _check_source(source: Path) -> None:
    """The tree's own package is the one imported (not the editable install's)."""
    found = subprocess.run([sys.executable, "-c", "import kubectl_dr; print(kubectl_dr.__file__)"], check=True,
                           capture_output=True, text=True, env=_env(source, {}), cwd=source).stdout.strip()
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"error: {source} imports kubectl_dr from {found}")


def run_once(source: Path, args: list[str], extra: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], env=_env(source, extra), cwd=source,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} in {source} exited {proc.returncode}: {err}")
    return wall, usage.ru_utime + usage.ru_stime


def importtime(source: Path, args: list[str], extra: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """Sum of the top-level imports' cumulative seconds, and the five costliest top-level imports."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", ENTRY, *args], env=_env(source, extra),
                         cwd=source, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True).stderr
    top: list[tuple[float, str]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not name.startswith(" ") or name.startswith("  "):
            continue  # nested: counted in its importer's cumulative time
        top.append((int(cumulative) / 1e6, name.strip()))
    return sum(s for s, _ in top), sorted(top, reverse=True)[:5]


@contextmanager
def cluster(kubeconfig: str | None) -> Iterator[str]:
    if kubeconfig:
        yield kubeconfig
        return
    with tempfile.TemporaryDirectory(prefix="dr-cli-start-") as tmp:
        root = Path(tmp) / "cluster"
        subprocess.run([sys.executable, "-m", "tests.cluster", "up", "--dir", str(root)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            yield str(root / "kubeconfig")
        finally:
            subprocess.run([sys.executable, "-m", "tests.cluster", "down", "--dir", str(root)], cwd=REPO,
                           stdout=subprocess.DEVNULL)


def local_repository(path: Path) -> Path:
    from kubectl_dr.repo.local import LocalRepository

    repo = LocalRepository(path)
    for i in range(5):
        with repo.create("pvc", {"namespace": "shop", "pvc": f"data-{i}"}, f"shop-data-{i}") as writer:
            with writer.open_part("data.tar") as part:
                part.write(os.urandom(1 << 16))
            writer.commit({"files": 1})
    return path


def _row(label: str, samples: list[tuple[float, float]]) -> str:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    return (f"{label:48} {statistics.median(walls):6.3f} ({min(walls):.3f}–{max(walls):.3f})"
            f"  {statistics.median(cpus):6.3f} ({min(cpus):.3f}–{max(cpus):.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="sources of the version to compare with")
    parser.add_argument("--after", type=Path, default=REPO, help="sources measured against it (this checkout)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kubeconfig", help="a running cluster for `version` (else a loopback one is started)")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for source in trees.values():
        _compile(source)
        _check_source(source)
    print(f"load average at the start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="dr-cli-start-repo-") as tmp, cluster(args.kubeconfig) as kubeconfig:
        repo = local_repository(Path(tmp) / "repo")
        commands: list[tuple[str, list[str], dict[str, str]]] = [
            ("kubectl-dr --help", ["--help"], {}),
            ("kubectl-dr version (loopback cluster)", ["version"], {"KUBECONFIG": kubeconfig}),
            ("kubectl-dr backups list --repo DIR (local)", ["backups", "list", "--repo", str(repo)], {}),
            ("kubectl-dr pvc backup --help", ["pvc", "backup", "--help"], {}),
        ]
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for source in trees.values():  # one unmeasured run each: the page cache holds both trees alike
            for _, argv, extra in commands:
                run_once(source, argv, extra)
        for i in range(args.runs):
            order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
            for label, argv, extra in commands:
                for name, source in order:
                    samples.setdefault((label, name), []).append(run_once(source, argv, extra))
        print(f"load average at the end: {os.getloadavg()}")
        print(f"\n{args.runs} runs each; wall s and CPU s (user + system): median (min–max)")
        print(f"{'command':48} {'wall':>22}  {'CPU':>22}")
        for label, _, _ in commands:
            for name in trees:
                print(_row(f"{label} [{name}]", samples[(label, name)]))
            before = statistics.median(w for w, _ in samples[(label, "before")])
            after = statistics.median(w for w, _ in samples[(label, "after")])
            print(f"{'':48} after / before (wall medians): {after / before:.2f}")
        print("\npython -X importtime (one run each): top-level imports' cumulative seconds")
        for label, argv in (("--help", ["--help"]), ("version --client", ["version", "--client"]),
                            ("pvc backup --help", ["pvc", "backup", "--help"])):
            for name, source in trees.items():
                total, costliest = importtime(source, argv, {})
                print(f"  {label:18} [{name:6}] {total:6.3f}  "
                      + ", ".join(f"{module} {seconds:.3f}" for seconds, module in costliest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
