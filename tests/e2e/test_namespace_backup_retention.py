"""An application backup and its claims' backups live and die together, as a user meets them: two real
`namespace backup`s of a namespace with two claims (written by the app's uid 1000) on the loopback cluster,
then `backups list`, `delete` and `prune` in a local repository and in SeaweedFS (the backups copied there).

A claim's backup is refused alone; the application backup takes its claims' backups with it; a prune keeps
a kept application backup's claims' backups and removes a removed one's; a delete killed mid-way leaves the
application backup marked as being deleted (listed so, refused by a restore), and the rerun finishes it.
Whatever stays is still restorable (`namespace restore --dry-run=client` checks every claim's backup) and
verifies clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli_runner, tables
from tests.cli_runner import clean_env
from tests.datasets import APP_GID, APP_UID, build_app_tree, make_claim, new_namespace, volume_dir

CLAIMS = ("db", "cache")
# `kubectl dr` whose repository removal is SIGKILLed right after its first removal: the delete's own order
# decides what that leaves (mark, first claim's backup gone, the rest still there).
KILLED_AFTER_FIRST_REMOVAL = textwrap.dedent("""
    import os, signal, sys
    from kubectl_dr.repo.local import LocalRepository
    from kubectl_dr.repo.objectstore import ObjectStoreRepository
    for cls in (LocalRepository, ObjectStoreRepository):
        def remove(self, backup, _real=cls._remove):
            _real(self, backup)
            os.kill(os.getpid(), signal.SIGKILL)
        cls._remove = remove
    from kubectl_dr.cli.main import main
    sys.argv = ["kubectl-dr", *sys.argv[1:]]
    main()
""")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pristine(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two application backups of one namespace (older, newer), each naming its two claims' backups."""
    ns = new_namespace(cluster, "keep")
    for i, name in enumerate(CLAIMS):
        make_claim(cluster, ns, name)
        vol = volume_dir(cluster, ns, name)
        build_app_tree(vol)
        (vol / "own").write_bytes(os.urandom((i + 1) * 100_003))
        os.chown(vol / "own", APP_UID, APP_GID)
    cluster.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=mode=fast")
    repo = tmp_path_factory.mktemp("families") / "repo"
    made = [json.loads(ok(cli_runner.dr("ns", "backup", ns, "-o", "json", cluster=cluster, repo=repo, timeout=600,
                                        subprocess=True)))
            for _ in range(2)]
    apps = {}
    for key, backup in zip(("old", "new"), made, strict=True):
        assert sorted(c["name"] for c in backup["claims"]) == sorted(CLAIMS), backup
        # In the order the backup names them: the order its delete takes them in.
        apps[key] = {"id": backup["id"], "claims": [c["backup"] for c in backup["claims"]]}
    yield {"ns": ns, "repo": repo, **apps}
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


class Repo:
    """One copy of the pristine backups, local or in a SeaweedFS bucket, and `kubectl dr` against it."""

    def __init__(self, cluster: Any, url: str, env: dict[str, str]) -> None:
        self.cluster, self.url, self.env = cluster, url, env

    def dr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """In-process: listings, deletes, prunes, verifies and client dry runs start no pod and read or change
        only the repository. The delete cut by SIGKILL is a real process of its own."""
        return cli_runner.dr(*args, cluster=self.cluster, repo=self.url, extra_env=self.env)

    def listed(self) -> dict[str, dict[str, Any]]:
        return {i["id"]: i for i in json.loads(ok(self.dr("backups", "list", "-o", "json")))["items"]}

    def restorable(self, pristine: dict[str, Any], app_id: str) -> subprocess.CompletedProcess[str]:
        return self.dr("--dry-run=client", "ns", "restore", pristine["ns"], "--from", app_id, "--to",
                       f"{pristine['ns']}-check")


@pytest.fixture(params=["local", "seaweedfs"])
def repo(request: pytest.FixtureRequest, pristine: dict[str, Any], cluster: Any, tmp_path: Path) -> Repo:
    local = tmp_path / "repo"
    shutil.copytree(pristine["repo"], local, symlinks=True)
    if request.param == "local":
        return Repo(cluster, str(local), {})
    server = request.getfixturevalue("seaweedfs")
    url = f"s3://{server.new_bucket()}/apps"
    ok(cli_runner.dr("--yes", "backups", "copy", "--all", "--to", url, repo=local, extra_env=server.env()))
    return Repo(cluster, url, server.env())


def family(pristine: dict[str, Any], key: str) -> set[str]:
    return {pristine[key]["id"], *pristine[key]["claims"]}


def test_list_names_the_app_backup_and_a_claims_backup_is_not_deleted_alone(
        repo: Repo, pristine: dict[str, Any]) -> None:
    old, new = pristine["old"], pristine["new"]
    listed = repo.listed()
    assert set(listed) == family(pristine, "old") | family(pristine, "new")
    for app in (old, new):
        assert listed[app["id"]]["partOf"] == [] and listed[app["id"]]["deleting"] is False
        assert [listed[c]["partOf"] for c in app["claims"]] == [[app["id"]]] * 2

    refused = repo.dr("--yes", "backups", "delete", old["claims"][0])
    assert refused.returncode == 1, refused
    assert f'backup "{old["claims"][0]}" holds a claim\'s data for application backup "{old["id"]}"' in refused.stderr
    assert f"kubectl dr backups delete {old['id']}" in refused.stderr
    assert set(repo.listed()) == set(listed)

    dry = json.loads(ok(repo.dr("--dry-run=client", "backups", "delete", old["id"], "-o", "json")))
    assert dry["deleted"] == [*old["claims"], old["id"]] and dry["dryRun"] is True
    assert set(repo.listed()) == set(listed)

    # The confirmation names what goes with it (without a terminal and --yes: refused, with the question).
    asked = repo.dr("backups", "delete", old["id"])
    assert asked.returncode == 1, asked
    assert (f'refusing to delete backup "{old["id"]}" and the 2 backups of its claims\' data '
            f'({", ".join(old["claims"])})') in asked.stderr
    done = repo.dr("--yes", "backups", "delete", old["id"])
    assert ok(done) == "".join(f'backup "{i}" deleted\n' for i in [*old["claims"], old["id"]])
    assert set(repo.listed()) == family(pristine, "new")
    ok(repo.restorable(pristine, new["id"]))


def test_prune_keeps_and_removes_claims_backups_with_their_app_backup(repo: Repo, pristine: dict[str, Any]) -> None:
    old, new = pristine["old"], pristine["new"]
    plan = ok(repo.dr("--dry-run=client", "backups", "prune", "--keep-last", "1"))
    keep = {r["KEEP"]: r["REASONS"] for r in _tables(plan, "KEEP")}
    assert keep == {new["id"]: "last", **{c: f"claim of app backup {new['id']}" for c in new["claims"]}}, plan
    delete = {r["DELETE"]: r.get("WHY", "") for r in _tables(plan, "DELETE")}
    assert delete[old["id"]] in ("", "no rule keeps it")
    assert {c: delete[c] for c in old["claims"]} == {c: f"claim of app backup {old['id']}, which goes"
                                                     for c in old["claims"]}, plan
    assert set(repo.listed()) == family(pristine, "old") | family(pristine, "new")

    pruned = json.loads(ok(repo.dr("--yes", "backups", "prune", "--keep-last", "1", "-o", "json")))
    assert set(pruned["removed"]) == family(pristine, "old") and pruned["failed"] == []
    assert set(repo.listed()) == family(pristine, "new")
    for backup_id in family(pristine, "new"):
        ok(repo.dr("backups", "verify", backup_id))
    ok(repo.restorable(pristine, new["id"]))


def test_a_delete_killed_mid_way_is_marked_and_the_rerun_finishes(repo: Repo, pristine: dict[str, Any]) -> None:
    old = pristine["old"]
    env = clean_env({"KUBECTL_DR_REPO": repo.url, **repo.env})
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_REMOVAL, "--yes", "backups", "delete",
                             old["id"]], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    listed = repo.listed()
    # The mark came first: the app backup is listed as being deleted, its first claim's backup is gone.
    assert listed[old["id"]]["deleting"] is True
    assert old["claims"][0] not in listed and old["claims"][1] in listed
    row = {r["ID"]: r for r in tables.rows(ok(repo.dr("backups", "list")))}[old["id"]]
    assert row["VERIFIED"] == "deleting"
    refused = repo.restorable(pristine, old["id"])
    assert refused.returncode == 1 and f"backup {old['id']} is being deleted" in refused.stderr, refused
    assert f"kubectl dr backups delete {old['id']}" in refused.stderr

    rerun = repo.dr("--yes", "backups", "delete", old["id"], "-o", "json")
    assert json.loads(ok(rerun))["deleted"] == [old["claims"][1], old["id"]]
    assert set(repo.listed()) == family(pristine, "new")
    for backup_id in family(pristine, "new"):
        ok(repo.dr("backups", "verify", backup_id))
    assert json.loads(ok(repo.dr("backups", "prune", "--keep-last", "1", "-o", "json")))["removed"] == []


def _tables(text: str, first: str) -> list[dict[str, str]]:
    """The rows of every table in a prune plan whose first header is ``first``."""
    rows: list[dict[str, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(first + " "):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].strip()
                        or lines[j].startswith(("KEEP ", "DELETE ", "series "))), len(lines))
            rows += tables.rows("\n".join(lines[i:end]))
    return rows


def test_an_app_backup_is_copied_with_its_claims_backups(pristine: dict[str, Any], cluster: Any,
                                                         tmp_path: Path) -> None:
    old = pristine["old"]
    target = tmp_path / "offsite"
    copied = json.loads(ok(cli_runner.dr("backups", "copy", old["id"], "--to", str(target), "-o", "json",
                                         cluster=cluster, repo=pristine["repo"])))
    # Its claims' backups first: the target never holds the application backup without its claims' data.
    assert copied["copied"] == [*old["claims"], old["id"]], copied
    there = Repo(cluster, str(target), {})
    assert set(there.listed()) == family(pristine, "old")
    ok(there.restorable(pristine, old["id"]))


def test_an_unencrypted_app_backup_is_not_copied_to_a_remote_without_consent(pristine: dict[str, Any], cluster: Any,
                                                                            seaweedfs: Any) -> None:
    """An application backup holds its namespaces' Secrets: like an etcd snapshot, it does not go to a bucket in
    plain text unless the user says so (--yes) or encrypts it (--encrypt-to)."""
    url = f"s3://{seaweedfs.new_bucket()}/apps"
    refused = cli_runner.dr("backups", "copy", pristine["old"]["id"], "--to", url, cluster=cluster,
                            repo=pristine["repo"], extra_env=seaweedfs.env())
    assert refused.returncode == 1, refused.stderr
    assert "holds the Secrets of its namespaces" in refused.stderr and "--encrypt-to" in refused.stderr
    there = Repo(cluster, url, seaweedfs.env())
    assert there.listed() == {}
    ok(cli_runner.dr("--yes", "backups", "copy", pristine["old"]["id"], "--to", url, cluster=cluster,
                     repo=pristine["repo"], extra_env=seaweedfs.env()))
    assert set(there.listed()) == family(pristine, "old")
