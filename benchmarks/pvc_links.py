"""`kubectl dr pvc backup|restore --compress none|gzip|auto` against `kubectl cp` on slowed links, same run.

    python -m benchmarks.pvc_links [--mb 64] [--links 0,1000,100] [--rounds 1] [--dir /tmp/bench-links]

Not run by pytest. One loopback cluster, restarted for each link speed (`up --link-mbit N`, 0 =
unlimited; the volume's files stay). Two data sets written as uid 1000: compressible (an access log and
a database dump, as text) and incompressible (random bytes). For each link and data set, every tool runs
once per round in the same order: `kubectl cp` out and in (real kubectl 1.33, through a busybox pod that
mounts the claim), then `kubectl dr pvc backup` and `restore` with each `--compress`. Ratios are
`time(kubectl cp) / time(tool)` in the same round: above 1 is faster than `kubectl cp`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.pvc_transfer import Bench, du_bytes, measure
from tests.cli_runner import executable
from tests.cluster.__main__ import down, up
from tests.cluster.control.layout import Layout
from tests.cluster.fixture import start_cluster
from tests.datasets import make_claim, new_namespace, volume_dir, wipe

MIB = 1 << 20
MODES = ("none", "gzip", "auto")


def build(vol: Path, kind: str, total: int) -> None:
    """Compressible: half an access log, half a SQL dump. Incompressible: random files. Owned by uid 1000."""
    wipe(vol)
    if kind == "compressible":
        with open(vol / "access.log", "wb") as f:
            i = 0
            while f.tell() < total // 2:
                f.write(b'10.0.%d.%d - - [06/Dec/2026:09:%02d:%02d +0000] "GET /api/orders/%d HTTP/1.1" 200 %d "-" '
                        b'"Mozilla/5.0"\n' % (i % 250, i % 199, i % 60, i % 59, i, 300 + i % 5000))
                i += 1
        with open(vol / "dump.sql", "wb") as f:
            i = 0
            while f.tell() < total // 2:
                f.write(b"INSERT INTO orders (id, customer, state, total, note) VALUES (%d, 'customer-%d', '%s', "
                        b"%d.%02d, 'deliver to the back door');\n" % (i, i % 9973, [b"new", b"paid", b"shipped"][i % 3],
                                                                      i % 500, i % 100))
                i += 1
    else:
        for n in range(max(1, total // (8 * MIB))):
            (vol / f"blob-{n}.bin").write_bytes(os.urandom(8 * MIB))
    for path in [vol, *vol.rglob("*")]:
        os.chown(path, 1000, 1000)


def restart(cluster: Any, mbit: int) -> None:
    layout = Layout(cluster.dir)
    down(layout)
    cluster.state = up(layout, 0, 0, [], {}, link_mbit=float(mbit))


def run(args: argparse.Namespace) -> None:
    work = Path(args.dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cluster = start_cluster(work / "cluster", control_planes=1, workers=1)
    results: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    chosen: dict[tuple[int, str, str], str] = {}
    try:
        ns = new_namespace(cluster, "links")
        make_claim(cluster, ns)
        vol = volume_dir(cluster, ns)
        for mbit in [int(x) for x in args.links.split(",")]:
            restart(cluster, mbit)
            b = Bench(cluster, ns, work)
            link = f"{mbit} Mbit/s" if mbit else "unlimited"
            for kind in ("compressible", "incompressible"):
                build(vol, kind, int(args.mb * MIB))
                size = du_bytes(vol)
                for round_no in range(args.rounds):
                    print(f"{link}, {kind} {size / MIB:.0f} MiB, round {round_no + 1} "
                          f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                    r = results[(mbit, kind)]
                    b.pod(True)
                    cpdir = work / "cp"
                    shutil.rmtree(cpdir, ignore_errors=True)
                    r["cp backup"].append(measure([*b.k, "cp", f"{ns}/bench:/data", str(cpdir)])[0])
                    saved = work / "saved"
                    shutil.rmtree(saved, ignore_errors=True)
                    shutil.copytree(vol, saved, symlinks=True)
                    wipe(vol)
                    r["cp restore"].append(measure([*b.k, "cp", str(cpdir), f"{ns}/bench:/data/cp"])[0])
                    b.pod(False)
                    wipe(vol)
                    shutil.copytree(saved, vol, symlinks=True, dirs_exist_ok=True)
                    shutil.rmtree(cpdir)
                    backup_id = ""
                    for mode in MODES:
                        s, _, result = b.dr_backup_to(str(b.repo), f"backup {mode}", "--compress", mode)
                        r[f"dr backup {mode}"].append(s)
                        chosen[(mbit, kind, f"backup {mode}")] = result["details"]["transfer"]["compression"]["method"]
                        backup_id = backup_id or result["id"]
                    for mode in MODES:
                        wipe(vol)
                        out = work / "restore.json"
                        s, _ = measure([executable(), "pvc", "restore", "data", "-n", ns, "--repo", str(b.repo),
                                        "--from", backup_id, "--yes", "--compress", mode, "-o", "json"],
                                       stdout=out, env=b.env)
                        r[f"dr restore {mode}"].append(s)
                        chosen[(mbit, kind, f"restore {mode}")] = json.loads(out.read_text())["compression"]["method"]
                    shutil.rmtree(saved)
                    shutil.rmtree(b.repo)
        print(f"\n{args.mb:g} MiB per data set, {args.rounds} round(s); seconds (median) and ×kubectl cp "
              "(same round, above 1 is faster); auto's choice in brackets")
        for (mbit, kind), r in results.items():
            link = f"{mbit} Mbit/s" if mbit else "unlimited"
            cp_b, cp_r = statistics.median(r["cp backup"]), statistics.median(r["cp restore"])
            cells = [f"cp {cp_b:.1f}s/{cp_r:.1f}s"]
            for mode in MODES:
                bk, rs = statistics.median(r[f"dr backup {mode}"]), statistics.median(r[f"dr restore {mode}"])
                note = (f" [{chosen[(mbit, kind, 'backup auto')]}/{chosen[(mbit, kind, 'restore auto')]}]"
                        if mode == "auto" else "")
                cells.append(f"{mode}{note} backup {bk:.1f}s ×{cp_b / bk:.2f}, restore {rs:.1f}s ×{cp_r / rs:.2f}")
            print(f"{link:>12} {kind:<15} " + "; ".join(cells))
    finally:
        down(Layout(cluster.dir))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=64, help="size of each data set (MiB)")
    parser.add_argument("--links", default="0,1000,100", help="link speeds in Mbit/s, 0 = unlimited")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/kubectl-dr-bench-links", help="work directory (removed first)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
