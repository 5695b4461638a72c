"""The suite's `dr()`: a run in this interpreter answers as the installed executable does (exit code, stdout,
stderr, byte for byte), sees only the environment, stdin and working directory it was given, and leaves
this process as it found it. Checked against the real executable, never against a recording."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kubectl_dr.repo.local import LocalRepository
from tests import tables
from tests.cli_runner import clean_env, dr, executable

DEAD_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: someone
  user: {token: "t"}
contexts:
- name: dead
  context: {cluster: dead, user: someone, namespace: shop}
current-context: dead
"""


def _filled(tmp_path: Path) -> tuple[Path, str]:
    repo = LocalRepository(tmp_path / "repo")
    with repo.create("pvc", {"namespace": "shop", "pvc": "data-db-0"}, "shop-data-db-0") as writer:
        with writer.open_part("data.tar") as part:
            part.write(os.urandom(3 << 19))
        backup_id = writer.commit({"files": 1}).id
    return tmp_path / "repo", backup_id


def _both(*args: str, **kwargs: object) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    inside = dr(*args, **kwargs)  # type: ignore[arg-type]
    outside = dr(*args, **kwargs, subprocess=True)  # type: ignore[arg-type]
    assert inside.args == outside.args
    return ((inside.returncode, inside.stdout, inside.stderr),
            (outside.returncode, outside.stdout, outside.stderr))


@pytest.mark.parametrize("args", [
    ["version", "--bogus"],  # usage error: 2, kubectl's words on stderr
    ["pvcs"],  # an unknown command, with its one suggestion
    ["--help"],  # Rich help at the width a pipe gets
    ["backups", "prune", "--help"],
    ["options"],
    ["version", "--client", "-o", "yaml"],
    ["completion", "bash"],
])
def test_in_process_answers_as_the_executable(args: list[str]) -> None:
    inside, outside = _both(*args)
    assert inside == outside


def test_results_errors_stdin_and_working_directory_as_the_executable(tmp_path: Path) -> None:
    repo, backup_id = _filled(tmp_path)
    for fmt in ("json", "yaml"):
        inside, outside = _both("backups", "list", "--repo", str(repo), "-o", fmt)
        assert inside == outside and inside[0] == 0 and backup_id in inside[1]
    inside, outside = _both("backups", "list", "--repo", str(repo))
    # The AGE column counts the seconds between the two runs; the rest is the same table.
    assert [{**row, "AGE": "-"} for row in tables.rows(inside[1])] == [
        {**row, "AGE": "-"} for row in tables.rows(outside[1])]
    assert (inside[0], inside[1].splitlines()[0], inside[2]) == (outside[0], outside[1].splitlines()[0], outside[2])
    assert [row["ID"] for row in tables.rows(inside[1])] == [backup_id]
    # No terminal and an empty stdin: a delete is refused, asking for --yes; the answer on stdin is no answer.
    for given in (None, b"y\n"):
        inside, outside = _both("backups", "delete", backup_id, "--repo", str(repo), input=given)
        assert inside == outside and inside[0] == 1, inside
    assert (repo / backup_id).is_dir()
    # A relative repository is found from the run's working directory, not the test's.
    inside, outside = _both("backups", "list", "--repo", "repo", "-o", "json", cwd=tmp_path)
    assert inside == outside and [i["id"] for i in json.loads(inside[1])["items"]] == [backup_id]
    # The entries `schedule print` writes name the executable that printed them.
    inside, outside = _both("schedule", "print", "--crontab", "--repo", str(repo), "--what", "prune", "--keep-last",
                            "1", "-o", "json", extra_env={"KUBECONFIG": str(tmp_path / "none"),
                                                          "KUBECTL_DR_CONFIG": "/dev/null"})
    assert inside == outside and inside[0] == 0, inside
    assert [job["command"][0] for job in json.loads(inside[1])["jobs"]] == [executable()]
    # A kubeconfig given by environment, a server that refuses: the same error, exit 1.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(DEAD_KUBECONFIG)
    inside, outside = _both("version", extra_env={"KUBECONFIG": str(kubeconfig)})
    assert inside == outside and inside[0] == 1 and "127.0.0.1:1 was refused" in inside[2]


def test_a_dry_run_in_process_writes_nothing(tmp_path: Path) -> None:
    result = dr("--dry-run=client", "backups", "list", "--repo", str(tmp_path / "repo"), "-o", "json")
    assert (result.returncode, json.loads(result.stdout)["items"]) == (0, [])
    assert not (tmp_path / "repo").exists()


def test_an_in_process_run_leaves_this_process_as_it_was(tmp_path: Path) -> None:
    environ, cwd, streams, argv = dict(os.environ), os.getcwd(), (sys.stdin, sys.stdout, sys.stderr), list(sys.argv)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(DEAD_KUBECONFIG)
    env = clean_env({"KUBECONFIG": str(kubeconfig), "KUBECTL_DR_ONLY_IN_THE_RUN": "1"})
    traced = dr("-v", "6", "version", "--request-timeout=2s", env=env, cwd=tmp_path)
    assert traced.returncode == 1 and "request.go] GET https://127.0.0.1:1/version" in traced.stderr, traced.stderr
    assert (dict(os.environ), os.getcwd(), (sys.stdin, sys.stdout, sys.stderr), sys.argv) == (
        environ, cwd, streams, argv)
    # `-v 6` was that run's: the next run, without it, logs no request.
    untraced = dr("version", "--request-timeout=2s", env=env)
    assert untraced.returncode == 1 and "request.go]" not in untraced.stderr, untraced.stderr
