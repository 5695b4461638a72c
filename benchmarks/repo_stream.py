"""The repository layer alone: a PVC-backup-sized stream written to the local repository, to a real
S3 server (SeaweedFS) and to Azure Blob storage (Azurite) side by side in one run, read back, with and
without age encryption.

    python -m benchmarks.repo_stream                  # 1 GiB each way, plus 4 GiB to S3 and Azure for peak RSS
    python -m benchmarks.repo_stream --gib 0.25 --big-gib 0   # quick look
    python -m benchmarks.repo_stream --big-age                # the 4 GiB cases encrypted too

Each case runs in a fresh process that streams generated data (1 MiB chunks, as the exec layer hands
them over) through `repo.create(...).open_part(...).write()` and commits, then `repo.verify()` reads it
back. Reported per case: MiB/s of the write and of the read-back, the writer process's CPU seconds per
GiB (user + system, from wait4), and its peak RSS (VmHWM, read by the process itself at the end). The
encryption cost is the difference in CPU-s/GiB between an encrypted case and the same case unencrypted.
The data is incompressible (one random MiB, its first bytes changed per chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from kubectl_dr.repo import open_repository, load_identities
    ref, size, recipient, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    repo = open_repository(ref, dict(os.environ), recipients=[recipient] if recipient else [],
                           identity_files=[key] if key else [])
    block = bytearray(os.urandom(1 << 20))
    t0 = time.perf_counter()
    c0 = os.times()
    with repo.create("pvc", {"namespace": "bench", "pvc": "data"}, "bench") as writer:
        with writer.open_part("data.tar", size_hint=size) as part:
            for i in range(size >> 20):
                block[:8] = i.to_bytes(8, "little")
                part.write(block)
        manifest = writer.commit({})
    t1 = time.perf_counter()
    c1 = os.times()
    repo.verify(repo.get(manifest.id))
    t2 = time.perf_counter()
    c2 = os.times()
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"write_s": t1 - t0, "read_s": t2 - t1, "write_cpu": (c1.user + c1.system) - (c0.user + c0.system),
                      "read_cpu": (c2.user + c2.system) - (c1.user + c1.system), "peak_rss_kib": hwm}))
    """
)


def run_case(ref: str, size: int, env: dict[str, str], recipient: str = "", key: str = "") -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, ref, str(size), recipient, key], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {ref} failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the main cases (default 1 GiB)")
    parser.add_argument("--big-gib", type=float, default=4.0, help="size of the S3 peak-RSS case (0: skip)")
    parser.add_argument("--big-age", action="store_true",
                        help="also write the S3 and Azure peak-RSS cases encrypted to age")
    parser.add_argument("--kinds", default="local,s3,azure",
                        help="the repositories to measure, comma-separated (default local,s3,azure)")
    args = parser.parse_args()

    import pyrage

    from tests import azurite as azurite_server
    from tests.s3server import start_seaweedfs, stop

    size = int(args.gib * (1 << 30)) >> 20 << 20
    big = int(args.big_gib * (1 << 30)) >> 20 << 20
    with tempfile.TemporaryDirectory(prefix="kubectl-dr-bench-") as tmp:
        work = Path(tmp)
        kinds = set(args.kinds.split(","))
        server = start_seaweedfs(work) if "s3" in kinds else None
        azurite = azurite_server.start(work) if "azure" in kinds else None
        try:
            env = {**os.environ, "KUBECTL_DR_CONFIG": os.devnull}
            bucket = container = ""
            if server is not None:
                bucket = server.new_bucket()
                env.update(server.env())
                # SeaweedFS allocates its volumes on the first writes: not part of what is measured.
                server.client().put_object(Bucket=bucket, Key="warm-up", Body=os.urandom(64 << 20))
            if azurite is not None:
                container = azurite.new_container()
                env.update(azurite.env())
            identity = pyrage.x25519.Identity.generate()
            key = work / "age.txt"
            key.write_text(f"{identity}\n")
            recipient = str(identity.to_public())
            cases = [
                ("local", str(work / "repo"), size, ""),
                ("s3", f"s3://{bucket}/bench", size, ""),
                ("local + age", str(work / "repo"), size, recipient),
                ("s3 + age", f"s3://{bucket}/bench", size, recipient),
                ("azure", f"azure://{container}/bench", size, ""),
                ("azure + age", f"azure://{container}/bench", size, recipient),
            ]
            if big:
                cases.append(("s3 (peak RSS)", f"s3://{bucket}/bench", big, ""))
                cases.append(("azure (peak RSS)", f"azure://{container}/bench", big, ""))
                if args.big_age:
                    cases.append(("s3 + age (peak RSS)", f"s3://{bucket}/bench", big, recipient))
                    cases.append(("azure + age (peak RSS)", f"azure://{container}/bench", big, recipient))
            print(f"{'case':22} {'GiB':>5} {'write MiB/s':>12} {'read MiB/s':>11} {'write CPU-s/GiB':>16} "
                  f"{'read CPU-s/GiB':>15} {'peak RSS MiB':>13}")
            results = {}
            for name, ref, n, rec in cases:
                if name.split()[0] not in kinds:
                    continue
                r = run_case(ref, n, env, rec, str(key) if rec else "")
                gib = n / (1 << 30)
                results[name] = r
                print(f"{name:22} {gib:5.2f} {n / (1 << 20) / r['write_s']:12.1f} {n / (1 << 20) / r['read_s']:11.1f} "
                      f"{r['write_cpu'] / gib:16.2f} {r['read_cpu'] / gib:15.2f} {r['peak_rss_kib'] / 1024:13.1f}",
                      flush=True)
            gib = size / (1 << 30)
            for base in ("local", "s3", "azure"):
                if f"{base} + age" not in results or "local" not in results:
                    continue
                plain, enc = results[base], results[f"{base} + age"]
                print(f"age encryption, {base}: +{(enc['write_cpu'] - plain['write_cpu']) / gib:.2f} CPU-s/GiB to "
                      f"write, +{(enc['read_cpu'] - plain['read_cpu']) / gib:.2f} CPU-s/GiB to read back and decrypt")
            for remote in ("s3", "azure", "s3 + age", "azure + age"):
                if remote not in results or "local" not in results:
                    continue
                local = results["local + age" if remote.endswith("age") else "local"]
                if remote in results:
                    r = results[remote]
                    print(f"{remote} against the local repository: write {local['write_s'] / r['write_s']:.2f}×, "
                          f"read back {local['read_s'] / r['read_s']:.2f}×")
        finally:
            if azurite is not None:
                azurite_server.stop(azurite)
            if server is not None:
                stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
