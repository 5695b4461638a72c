"""The restic first backup's own work, without a cluster: a tar stream of `build_mixed` data read from a file
through what a backup does with it as it arrives (the stream's SHA-256, the checking tar reader, files cut
into blobs, hashed, compressed or not, sealed and packed into a new local restic repository), beside the
same stream through the hash and the reader only, written to a file as the plain repository keeps it.

    python benchmarks/restic_pipeline.py [--gb 0.5] [--runs 3] [--dir /tmp/bench-restic-pipeline]

Not run by pytest. Each pass runs in a process of its own; it prints wall seconds, CPU-seconds (user and
system), peak RSS and minor page faults of that process, and the CPU-seconds of each thread (main: the
stream, hash and reader; restic-blobs: blob IDs and zstd; restic-pack-writer: packing; restic-pack-store:
writing packs). With `PYTHONPATH=OLD_TREE` it measures an older tree's code the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

GIB = 1 << 30
READ = 64 * 1024  # bytes per read: about what the exec stream hands on at a time


def _thread_cpu(seen: dict[str, tuple[float, float]]) -> None:
    names = {str(t.native_id): t.name.split("_")[0] for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[tid + ":" + names.get(tid, "?")] = (int(fields[11]) / tick, int(fields[12]) / tick)


def one_pass(tar: Path, mode: str, work: Path) -> None:
    from kubectl_dr.repo.restic.backend import LocalBackend
    from kubectl_dr.repo.restic.blob_stream import BlobStream
    from kubectl_dr.repo.restic.repository import Repository
    from kubectl_dr.volumes.restic_content import ContentCutter
    from kubectl_dr.volumes.tar_reader import TarReader

    seen: dict[str, tuple[float, float]] = {}
    done = threading.Event()

    def watch() -> None:  # threads end before the pass does: their CPU is sampled while they run
        while not done.wait(0.02):
            _thread_cpu(seen)

    threading.Thread(target=watch, name="watch", daemon=True).start()
    repo = Repository.init(LocalBackend(work / "restic"), b"benchmark") if mode == "restic" else None
    start, cpu = time.monotonic(), time.process_time()
    digest = hashlib.sha256()
    with open(tar, "rb", buffering=0) as source:
        if repo is None:
            reader = TarReader(on_data=lambda view: None)
            with open(work / "plain.tar", "wb") as out:
                while data := source.read(READ):
                    digest.update(data)
                    reader.feed(data)
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            reader.finish()
        else:
            with BlobStream[str](repo) as blobs:
                cutter = ContentCutter(blobs)
                reader = TarReader(on_member=cutter.member, on_data=cutter.data)
                while data := source.read(READ):
                    digest.update(data)
                    reader.feed(data)
                reader.finish()
                cutter.finish()
                blobs.close()
            repo.flush()
    wall, cpu = time.monotonic() - start, time.process_time() - cpu
    _thread_cpu(seen)
    done.set()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    threads: dict[str, float] = {}
    for key, (user, system) in seen.items():
        name = key.split(":", 1)[1]
        threads[name] = threads.get(name, 0.0) + user + system
    per_thread = ", ".join(f"{name} {value:.2f}" for name, value in sorted(threads.items(), key=lambda kv: -kv[1])
                           if value >= 0.01)
    print(f"{mode:6s} wall {wall:5.2f} s  CPU {cpu:5.2f} s (user {usage.ru_utime:.2f}, sys {usage.ru_stime:.2f})  "
          f"peak RSS {usage.ru_maxrss / 1024:5.1f} MiB  minor faults {usage.ru_minflt}  load "
          f"{os.getloadavg()[0]:.1f}  | threads: {per_thread}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/bench-restic-pipeline")
    parser.add_argument("--pass", dest="one", nargs=2, metavar=("MODE", "TAR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.dir)
    if args.one:
        mode, tar = args.one
        one_pass(Path(tar), mode, work / mode)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.datasets import build_mixed

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    info = build_mixed(work / "data", int(args.gb * GIB))
    tar = work / "data.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(work / "data"), "."], check=True)
    shutil.rmtree(work / "data")
    print(f"{info['files']} files, {info['bytes'] / GIB:.3f} GiB; tar stream {tar.stat().st_size / GIB:.3f} GiB")
    for _ in range(args.runs):
        for mode in ("plain", "restic"):
            shutil.rmtree(work / mode, ignore_errors=True)
            (work / mode).mkdir()
            subprocess.run([sys.executable, __file__, "--dir", str(work), "--pass", mode, str(tar)], check=True)
            shutil.rmtree(work / mode)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
