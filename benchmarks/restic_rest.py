"""The rest: backend against a local restic repository and against restic itself, same data, same run: a
first backup and a restore of a local directory of mixed files, through our repository code into (a) a
local directory, (b) restic-rest-server on 127.0.0.1, and (c) `restic backup` / `restic restore` into
the same rest-server (the reference: restic's own client on the same server).

    python -m benchmarks.restic_rest [--gb 0.25] [--dir /tmp/bench-restic-rest]

Not run by pytest. Needs restic and restic-rest-server (Debian 13, as .ci/run installs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kubectl_dr.repo.restic import archiver, localfs
from kubectl_dr.repo.restic.backend import Backend, LocalBackend
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.restbackend import RestBackend
from tests.datasets import build_mixed
from tests.restserver import start
from tests.serverproc import stop_group

GIB = 1 << 30
PASSWORD = "benchmark"


def timed(what: Callable[[], object]) -> float:
    start = time.monotonic()
    what()
    return time.monotonic() - start


def ours(backend: Callable[[], Backend], src: Path, out: Path) -> tuple[float, float]:
    Repository.init(backend(), PASSWORD.encode())
    backup = timed(lambda: localfs.backup_dir(Repository.open(backend(), PASSWORD.encode()), src,
                                              snapshot_path="/data", hostname="bench"))

    def restore() -> None:
        repo = Repository.open(backend(), PASSWORD.encode())
        snap = repo.snapshots()[-1]
        localfs.restore_to_dir(repo, archiver.volume_root(repo, snap.tree, snap.paths), out)

    return backup, timed(restore)


def theirs(url: str, src: Path, out: Path, cache: Path) -> tuple[float, float]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(cache)}

    def restic(*args: str) -> None:
        subprocess.run(["restic", "-r", url, "-q", *args], env=env, check=True, capture_output=True)

    restic("init")
    backup = timed(lambda: restic("backup", str(src), "--host", "bench"))
    return backup, timed(lambda: restic("restore", "latest", "--target", str(out)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=0.25)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-restic-rest"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    src = args.dir / "src"
    build_mixed(src, int(args.gb * GIB))
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    server = start(args.dir / "server")
    try:
        rows = [
            ("ours, local", ours(lambda: LocalBackend(args.dir / "local"), src, args.dir / "out-local")),
            ("ours, rest:", ours(lambda: RestBackend(server.url("ours")), src, args.dir / "out-rest")),
            ("restic, rest:", theirs(server.url("theirs"), src, args.dir / "out-restic", args.dir / "cache")),
        ]
    finally:
        stop_group(server.process, 5)
    mib = size / (1 << 20)
    print(f"{mib:.0f} MiB in {sum(1 for p in src.rglob('*') if p.is_file())} files")
    print(f"{'client, repository':<16} {'backup MiB/s':>13} {'restore MiB/s':>14}")
    for name, (backup, restore) in rows:
        print(f"{name:<16} {mib / backup:>13.1f} {mib / restore:>14.1f}")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
