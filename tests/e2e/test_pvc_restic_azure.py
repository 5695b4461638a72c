"""`pvc backup|restore --repo restic:azure:CONTAINER:/PREFIX` against the loopback cluster and Azurite:
init (the container created, as restic's init does), a full and an incremental backup, a restore into the
claim, and a prune, all from the command line with restic's own AZURE_ACCOUNT_* variables.

restic 0.18 cannot reach Azurite's path-style http endpoint, so restic judges the same blobs downloaded into
a local directory (restic's default layout is the same on every backend): `restic check --read-data` and
`restic restore` of our snapshot reproduce the volume exactly."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from kubectl_dr.repo.azureclient import DEV_ACCOUNT, DEV_KEY
from tests.azurite import Azurite
from tests.cli_runner import dr
from tests.datasets import build_app_tree, differences, make_claim, new_namespace, snapshot, volume_dir
from tests.e2e.test_pvc_restic import PROGRESS
from tests.restic.oracle import PASSWORD, restic, restic_json
from tests.restic.test_azure import download


def test_backup_incremental_restore_and_prune_in_azure(cluster: Any, azurite: Azurite, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "resticaz")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_app_tree(vol)
    for i in range(12):
        (vol / f"f{i:02d}").write_bytes(os.urandom(200_000))
        os.chown(vol / f"f{i:02d}", 1000, 2000)
    container = f"t{secrets.token_hex(6)}"  # not there yet: init creates it
    repo = f"restic:azure:{container}:/cluster/volumes"
    env = {**PROGRESS, "RESTIC_PASSWORD": PASSWORD, "AZURE_ACCOUNT_NAME": DEV_ACCOUNT, "AZURE_ACCOUNT_KEY": DEV_KEY}
    at = ["--azure-endpoint", azurite.endpoint]

    # A file changed within a second of a backup's listing is read again by the next backup (its change time
    # could hide a second write in the same tick): the data must be older than that to be reused.
    time.sleep(2.1)
    refused = dr("pvc", "backup", "data", "-n", ns, "--repo", repo, *at, extra_env=env, cluster=cluster)
    assert refused.returncode == 1 and "restic init" in refused.stderr, refused.stderr
    first = dr("--yes", "pvc", "backup", "data", "-n", ns, "--repo", repo, *at, "-o", "json", extra_env=env,
               cluster=cluster, subprocess=True)
    assert first.returncode == 0, first.stderr
    full = json.loads(first.stdout)
    assert all(name.startswith("cluster/volumes/") for name in azurite.blobs(container))

    (vol / "f03").write_bytes(os.urandom(200_000))
    (vol / "new").write_text("a new file")
    second = dr("pvc", "backup", "data", "-n", ns, "--repo", repo, *at, "-o", "json", extra_env=env, cluster=cluster,
                subprocess=True)
    assert second.returncode == 0, second.stderr
    inc = json.loads(second.stdout)
    assert inc["incremental"] and inc["parent"] == full["id"]
    assert inc["receivedBytes"] < full["receivedBytes"] / 4, (inc["receivedBytes"], full["receivedBytes"])

    local = download(azurite, container, "cluster/volumes", tmp_path / "copy")
    restic(local, "check", "--read-data")
    assert [s["id"] for s in restic_json(local, "snapshots")] == [full["id"], inc["id"]]
    restic(local, "restore", inc["id"], "--target", str(tmp_path / "out"))
    before = snapshot(vol)
    assert differences({k: v for k, v in before.items() if not k.startswith(b"lost+found")},
                       snapshot(tmp_path / "out" / "data")) == []

    (vol / "data.db").write_bytes(b"damaged")
    (vol / "extra").write_text("not in the snapshot")
    back = dr("--yes", "pvc", "restore", "data", "-n", ns, "--repo", repo, *at, "--from", "latest",
              "--clean", extra_env=env, cluster=cluster, subprocess=True)
    assert back.returncode == 0, back.stderr
    assert differences(before, snapshot(vol)) == []

    pruned = dr("backups", "prune", "--keep-last", "1", "--max-unused", "0%", "--repo", repo, *at, "--yes",
                "-o", "json", extra_env=env, cluster=cluster, subprocess=True)
    assert pruned.returncode == 0, pruned.stderr
    assert [s["id"] for s in json.loads(pruned.stdout)["snapshots"] if not s["keep"]] == [full["id"]]
    after = download(azurite, container, "cluster/volumes", tmp_path / "after")
    restic(after, "check", "--read-data")
    assert [s["id"] for s in restic_json(after, "snapshots")] == [inc["id"]]
    assert not azurite.blobs(container, "cluster/volumes/locks/")
