"""The rest: backend against the real restic-rest-server, judged by the real restic CLI: our snapshots pass
`restic check --read-data` and `restic restore`, a snapshot restic wrote there restores through us, and a
server that is down, refuses the credentials or has no repository at the path is said clearly."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from kubectl_dr.repo.restic import localfs, prune
from kubectl_dr.repo.restic.archiver import volume_root
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.restbackend import RestBackend
from kubectl_dr.repo.retention import Policy
from tests import cli_runner, datasets
from tests.cli_runner import clean_env
from tests.restic.oracle import PASSWORD, restic, restic_json
from tests.restserver import RestServer
from tests.s3server import free_port

PW = PASSWORD.encode()


def dr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli_runner.dr(*args, env=clean_env({"RESTIC_PASSWORD": PASSWORD, **(env or {})}), timeout=120)


def test_our_snapshots_pass_restic_check_and_restore_and_restics_restore_through_us(
        rest_server: RestServer, tmp_path: Path) -> None:
    url = rest_server.url(rest_server.new_path())
    src = tmp_path / "src"
    datasets.build_app_tree(src)
    repo = Repository.init(RestBackend(url), PW)
    first = localfs.backup_dir(repo, src, snapshot_path="/data", hostname="shop/db")
    (src / "more").write_bytes(b"x" * 3_000_000)
    second = localfs.backup_dir(Repository.open(RestBackend(url), PW), src, snapshot_path="/data",
                                hostname="shop/db", parent=first)
    restic(url, "check", "--read-data")
    assert [s["id"] for s in restic_json(url, "snapshots")] == [first.id, second.id]
    restic(url, "restore", second.id, "--target", str(tmp_path / "theirs"))
    assert datasets.differences(datasets.snapshot(src, root_entry=False),
                                datasets.snapshot(tmp_path / "theirs" / "data", root_entry=False)) == []

    # a snapshot restic wrote on the server, restored by us
    (src / "by-restic").write_text("written by restic itself")
    restic(url, "backup", str(src), "--host", "laptop")
    (theirs,) = [s for s in restic_json(url, "snapshots") if s["hostname"] == "laptop"]
    repo = Repository.open(RestBackend(url), PW)
    snap = next(s for s in repo.snapshots() if s.id == theirs["id"])
    localfs.restore_to_dir(repo, volume_root(repo, snap.tree, snap.paths), tmp_path / "ours")
    assert datasets.differences(datasets.snapshot(src, root_entry=False),
                                datasets.snapshot(tmp_path / "ours", root_entry=False)) == []

    # a prune over the REST protocol (deletes, restic's lock files) leaves a repository restic accepts
    done = prune.prune(repo, Policy(last=1), dry_run=False)
    assert len(done.forgotten) == 1  # shop/db keeps its newest; laptop's one snapshot stays
    restic(url, "check", "--read-data")
    assert {s["id"] for s in restic_json(url, "snapshots")} == {second.id, theirs["id"]}


def test_the_cli_reads_a_rest_repository_and_says_what_is_wrong(rest_server: RestServer, tmp_path: Path) -> None:
    url = rest_server.url(rest_server.new_path())
    restic(url, "init")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"hello")
    restic(url, "backup", str(tmp_path / "src"), "--host", "laptop")
    listed = dr("backups", "list", "--repo", f"restic:{url}", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [i["hostname"] for i in json.loads(listed.stdout)["items"]] == ["laptop"], listed.stdout

    denied = dr("backups", "list", "--repo", f"restic:{rest_server.url('x', password='wrong')}")
    assert denied.returncode == 1 and "refused the credentials" in denied.stderr and "(401)" in denied.stderr
    assert "wrong" not in denied.stderr  # the password in the URL is never printed

    missing_repo = dr("backups", "list", "--repo", f"restic:{rest_server.url('nothing-here')}")
    assert missing_repo.returncode == 1 and "there is no restic repository at" in missing_repo.stderr
    assert "init" in missing_repo.stderr and rest_server.password not in missing_repo.stderr

    down = dr("backups", "list", "--repo", f"restic:rest:http://127.0.0.1:{free_port()}/r/")
    assert down.returncode == 1 and "cannot reach the rest server" in down.stderr, down.stderr
    assert "rest-server is running" in down.stderr


def test_an_append_only_server_takes_backups_and_refuses_a_prune_clearly(tmp_path: Path) -> None:
    """rest-server --append-only (a repository ransomware on the client cannot wipe): our backups work (lock
    files may go), a prune is refused at its first delete with what to do, and the repository stays valid."""
    from tests import restserver

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(contextlib.contextmanager(restserver.serve)(tmp_path / "srv", "--append-only"))
        url = server.url("repo")
        src = tmp_path / "src"
        src.mkdir()
        for i in range(3):
            (src / "f").write_bytes(os.urandom(400_000 + i))
            repo = Repository.init(RestBackend(url), PW) if i == 0 else Repository.open(RestBackend(url), PW)
            localfs.backup_dir(repo, src, snapshot_path="/src", hostname="shop/db")
        restic(url, "check", "--read-data")
        refused = dr("backups", "prune", "--keep-last", "1", "--repo", f"restic:{url}", "--yes")
        assert refused.returncode == 1 and "(403)" in refused.stderr and "append-only" in refused.stderr, refused.stderr
        assert server.password not in refused.stderr
        restic(url, "check", "--read-data")
        assert len(restic_json(url, "snapshots")) == 3
        assert list(RestBackend(url).list("locks")) == []  # our lock went, even so
