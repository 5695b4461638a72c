"""`schedule print --repo restic:REPO`: the printed crontab lines run as cron runs them (sh, flock, the log), against
the loopback cluster, and the real restic judges what they wrote: `restic snapshots --json` shows one
incremental snapshot per run and the forget policy applied, `restic forget --dry-run` with the same flags finds
nothing more to remove, `restic check --read-data` passes and `restic restore` gives the volume back. The
password is named (a file of mode 0600), never written; what cannot work is refused with what to do instead."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tests.cli_runner import clean_env, dr
from tests.datasets import build_app_tree, differences, make_claim, new_namespace, snapshot, volume_dir
from tests.restic.oracle import PASSWORD, restic, restic_json


def _env(cluster: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env({"KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_DR_CONFIG": "/dev/null",
                      "XDG_STATE_HOME": str(tmp_path / "state"), **extra})


def _lines(crontab: str) -> dict[str, str]:
    """Entry name → the shell command cron would run (the five time fields dropped, `\\%` back to `%`)."""
    out: dict[str, str] = {}
    name = ""
    for line in crontab.splitlines():
        if line.startswith("# kubectl-dr-"):
            name = line[2:].split(":", 1)[0]
        elif line and not line.startswith("#"):
            out[name] = line.split(" ", 5)[5].replace("\\%", "%")
    return out


def _cron_run(command: str, tmp_path: Path, log: Path) -> str:
    """Run one entry as cron does: sh, an environment without the user's variables; the entry's log says how
    it ended."""
    before = log.read_text() if log.exists() else ""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh"}
    subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, timeout=300, check=True)
    text = log.read_text()[len(before):]
    assert text.rstrip().endswith("exit 0"), text
    return text


def test_printed_entries_back_up_a_claim_and_apply_retention_in_a_restic_repository(cluster: Any,
                                                                                      tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rsched")
    make_claim(cluster, ns)
    vol = volume_dir(cluster, ns)
    build_app_tree(vol)
    (vol / "db").write_bytes(os.urandom(1 << 20))
    os.chown(vol / "db", 1000, 1000)
    repo = tmp_path / "repo"
    restic(repo, "init")  # a scheduled run never creates a repository
    pw = tmp_path / "restic-pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    env = _env(cluster, tmp_path)

    printed = dr("schedule", "print", "--crontab", "--repo", f"restic:{repo}", "--password-file",
                 str(pw), "--what", "pvc-backup", "--pvc", f"{ns}/data", "--what", "prune", "--keep-last", "2",
                 "-o", "json", env=env, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    data = json.loads(printed.stdout)
    assert PASSWORD not in printed.stdout
    backup_job = next(j for j in data["jobs"] if j["name"].startswith("kubectl-dr-pvc-backup-"))
    assert backup_job["command"][-2:] == ["--password-file", str(pw)]
    assert "--yes" not in backup_job["command"]
    lines = _lines(data["crontab"])
    logs = tmp_path / "state" / "kubectl-dr"

    for run_no in range(3):
        (vol / "db").write_bytes(os.urandom(1 << 20))
        (vol / f"run-{run_no}").write_text(f"run {run_no}\n")
        _cron_run(lines[backup_job["name"]], tmp_path, logs / f"{backup_job['name']}.log")
    snaps = sorted(restic_json(repo, "snapshots"), key=lambda s: s["time"])
    assert len(snaps) == 3
    assert {s["hostname"] for s in snaps} == {f"{ns}/data"}
    assert all({f"namespace={ns}", "claim=data", "kind=pvc"} <= set(s["tags"]) for s in snaps)
    assert [s.get("parent") for s in snaps[1:]] == [snaps[0]["id"], snaps[1]["id"]]  # incremental runs

    _cron_run(lines["kubectl-dr-prune"], tmp_path, logs / "kubectl-dr-prune.log")
    kept = restic_json(repo, "snapshots")
    assert sorted(s["id"] for s in kept) == sorted(s["id"] for s in snaps[1:])
    # restic's own forget, same flags: nothing more to remove.
    groups = restic_json(repo, "forget", "--keep-last", "2", "--dry-run")
    assert all(not g.get("remove") for g in groups), groups
    restic(repo, "check", "--read-data")
    restic(repo, "restore", "latest", "--target", str(tmp_path / "out"))
    lost = {k for k in snapshot(vol) if k.startswith(b"lost+found")}
    assert differences({k: v for k, v in snapshot(vol).items() if k not in lost}, snapshot(tmp_path / "out" / "data")
                       ) == []
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip()
    assert pods == ""


def test_a_missing_repository_fails_the_run_instead_of_creating_one(cluster: Any, tmp_path: Path) -> None:
    ns = new_namespace(cluster, "rsched")
    make_claim(cluster, ns)
    pw = tmp_path / "restic-pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    repo = tmp_path / "typo"
    printed = dr("schedule", "print", "--crontab", "--repo", f"restic:{repo}", "--password-file",
                 str(pw), "--what", "pvc-backup", "--pvc", f"{ns}/data", env=_env(cluster, tmp_path), cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    (line,) = _lines(printed.stdout).values()
    subprocess.run(["sh", "-c", line], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300, check=True)
    log = (tmp_path / "state" / "kubectl-dr" / f"kubectl-dr-pvc-backup-{ns}-data.log").read_text()
    assert "restic init" in log and "exit 1" in log, log
    assert not repo.exists()


def test_refusals_say_what_to_do_instead(tmp_path: Path) -> None:
    env = clean_env({"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": "/dev/null",
                     "XDG_STATE_HOME": str(tmp_path / "state")})
    base = ["schedule", "print", "--crontab", "--repo", f"restic:{tmp_path}/repo"]
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o640)

    def refused(*args: str, extra: dict[str, str] | None = None) -> str:
        got = dr(*base, *args, env={**env, **(extra or {})}, cwd=tmp_path)
        assert got.returncode == 2, (got.stdout, got.stderr)
        assert PASSWORD not in got.stdout + got.stderr
        return got.stderr

    assert "RESTIC_PASSWORD" in refused("--what", "prune", "--keep-last", "1", extra={"RESTIC_PASSWORD": PASSWORD})
    assert "--password-file FILE" in refused("--what", "prune", "--keep-last", "1")
    assert "chmod 600" in refused("--what", "prune", "--keep-last", "1", "--password-file", str(pw))
    pw.chmod(0o600)
    assert "restic copy" in refused("--what", "copy", "--to", "/srv/x", "--password-file", str(pw))
    assert "encrypts every repository" in refused("--what", "etcd-pull", "--encrypt-to", "age1x", "--password-file",
                                                  str(pw))
    assert "mutually exclusive" in refused("--what", "prune", "--keep-last", "1", "--password-file", str(pw),
                                           "--password-command", "pass show x")
    rest = dr("schedule", "print", "--crontab", "--repo", f"restic:rest:http://u:{PASSWORD}@h:1/r/",
              "--password-file", str(pw), "--what", "etcd-pull", env=env, cwd=tmp_path)
    assert rest.returncode == 2 and "RESTIC_REST_PASSWORD" in rest.stderr and PASSWORD not in rest.stderr
    plain = dr("schedule", "print", "--crontab", "--repo", str(tmp_path / "plain"), "--what",
               "prune", "--keep-within", "7d", env=env, cwd=tmp_path)
    assert plain.returncode == 2 and "restic repositories" in plain.stderr
    incluster = dr("schedule", "create", "etcd-snapshot", "--cron", "@daily", "--repo",
                   "restic:/srv/restic", env=env, cwd=tmp_path)
    assert incluster.returncode == 2 and "schedule print --crontab --what etcd-pull" in incluster.stderr

    # A password command is named in the entry (RESTIC_PASSWORD_COMMAND), with systemd's % kept literal.
    units = dr(*base[:2], "--systemd", "--repo", f"restic:{tmp_path}/repo", "--what", "etcd-pull",
               "--password-command", "pass show restic/100%", "-o", "json", env=env, cwd=tmp_path)
    assert units.returncode == 0, units.stderr
    service = json.loads(units.stdout)["files"]["~/.config/systemd/user/kubectl-dr-etcd-pull.service"]
    assert "Environment='RESTIC_PASSWORD_COMMAND=pass show restic/100%%'" in service
    assert "--yes" not in service and f"--repo restic:{tmp_path}/repo" in service


ODD = "a b'c$HOME`true`%d\\e"  # a space, ', $, a backtick, %, \: each means something to sh, cron or systemd


def test_odd_characters_in_the_repository_and_password_file_stay_literal_and_a_newline_is_refused(
        tmp_path: Path) -> None:
    env = clean_env({"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": "/dev/null",
                     "XDG_STATE_HOME": str(tmp_path / "state")})
    repo = tmp_path / f"repo {ODD}"
    pw = tmp_path / f"pw {ODD}"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    restic(repo, "init")
    for word in ("one", "two"):
        restic(repo, "backup", "--stdin-from-command", "--stdin-filename", "x", "--", "echo", word)
    args = ["schedule", "print", "--repo", f"restic:{repo}", "--password-file", str(pw), "--what", "prune",
            "--keep-last", "1", "-o", "json"]

    # The crontab entry, run by sh as cron runs it (no cluster needed to prune): restic sees one snapshot left.
    printed = dr(*args[:2], "--crontab", *args[2:], env=env, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    crontab = json.loads(printed.stdout)["crontab"]
    assert f"# The restic password comes from the password file {shlex.quote(str(pw))};" in crontab
    (line,) = _lines(crontab).values()
    text = _cron_run(line, tmp_path, tmp_path / "state" / "kubectl-dr" / "kubectl-dr-prune.log")
    assert len(restic_json(repo, "snapshots")) == 1, text

    # The systemd unit: $ doubled in ExecStart (systemd expands it even in quotes), \ doubled and % doubled in
    # every line, so systemd hands the command the same words sh gets from the crontab.
    units = dr(*args[:2], "--systemd", *args[2:], env=env, cwd=tmp_path)
    assert units.returncode == 0, units.stderr
    service = json.loads(units.stdout)["files"]["~/.config/systemd/user/kubectl-dr-prune.service"]
    (exec_start,) = [s for s in service.splitlines() if s.startswith("ExecStart=")]
    (job,) = json.loads(printed.stdout)["jobs"]
    argv = job["command"]
    assert f"restic:{repo}" in argv and str(pw) in argv
    escaped = shlex.join(argv).replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")
    assert exec_start == "ExecStart=/usr/bin/flock -n %t/kubectl-dr-prune.lock " + escaped, exec_start

    # A password command's \ and % in Environment=.
    cmd = dr("schedule", "print", "--systemd", "--repo", f"restic:{repo}", "--what",
             "etcd-pull", "--password-command", "printf %s\\\\n pw", "-o", "json", env=env, cwd=tmp_path)
    assert cmd.returncode == 0, cmd.stderr
    service = json.loads(cmd.stdout)["files"]["~/.config/systemd/user/kubectl-dr-etcd-pull.service"]
    assert "Environment='RESTIC_PASSWORD_COMMAND=printf %%s\\\\\\\\n pw'\n" in service, service

    # A newline in any value would end the entry and start another line: refused, in both forms.
    for form in ("--crontab", "--systemd"):
        for bad in (["--repo", f"restic:{tmp_path}/new\nline", "--password-file", str(pw)],
                    ["--repo", f"restic:{repo}", "--password-command", "pass show x\n* * * * * rm -rf ~"]):
            got = dr("schedule", "print", form, *bad, "--what", "etcd-pull", env=env, cwd=tmp_path)
            assert got.returncode == 2 and "control character" in got.stderr, (got.stdout, got.stderr)


def test_a_restic_repository_from_the_config_file_is_one(tmp_path: Path) -> None:
    """The config file's repository counts as --repo does (after --repo and KUBECTL_DR_REPO)."""
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(f"repository: restic:{tmp_path}/repo\n")
    env = clean_env({"KUBECONFIG": str(tmp_path / "kubeconfig"), "KUBECTL_DR_CONFIG": str(config),
                     "XDG_STATE_HOME": str(tmp_path / "state")})
    got = dr("schedule", "print", "--crontab", "--password-file", str(pw), "--what", "prune",
             "--keep-last", "3", "-o", "json", env=env, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    (job,) = json.loads(got.stdout)["jobs"]
    cmd = job["command"]
    assert cmd[cmd.index("--password-file") + 1] == str(pw)
    assert cmd[cmd.index("--repo") + 1] == f"restic:{tmp_path}/repo"
