"""The installed executable, run as a subprocess: help, version, usage errors, kubeconfig errors, plugin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli_runner import clean_env, dr, executable, kubectl, run

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: dead-ctx
  context: {cluster: dead, user: someone, namespace: shop}
current-context: dead-ctx
users:
- name: someone
  user: {token: not-a-real-token}
"""


@pytest.fixture()
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    return path


def test_help_lists_nouns_and_kubectl_global_flags() -> None:
    result = dr("--help")
    assert result.returncode == 0, result.stderr
    for noun in ("pvc", "etcd", "scale", "backups", "version", "completion"):
        assert f"\n  {noun} " in result.stdout
    for flag, text in (
        ("--kubeconfig", "Path to the kubeconfig file to use for CLI requests."),
        ("--context", "The name of the kubeconfig context to use"),
        ("--namespace", "If present, the namespace scope for this CLI request"),
        ("--request-timeout", "The length of time to wait before giving up on a single server request."),
    ):
        assert flag in result.stdout
        assert " ".join(text.split()) in " ".join(result.stdout.split())
    assert result.stderr == ""


def test_no_arguments_prints_help_and_succeeds() -> None:
    result = dr()
    assert result.returncode == 0
    assert "Usage: kubectl-dr [OPTIONS] COMMAND" in result.stdout


def test_version_client_needs_no_cluster() -> None:
    result = dr("version", "--client")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Plugin Version: v")
    assert "Server Version" not in result.stdout
    as_json = dr("version", "--client", "-o", "json")
    data = json.loads(as_json.stdout)
    assert data["pluginVersion"].startswith("v")
    assert data["clientLibraryVersion"][0].isdigit()


def test_unknown_flag_is_a_usage_error() -> None:
    result = dr("version", "--bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: unknown flag: --bogus", "See 'kubectl-dr version --help' for usage."]


def test_bad_output_format_is_a_usage_error() -> None:
    result = dr("version", "--client", "-o", "xml")
    assert result.returncode == 2
    assert 'unable to match a printer suitable for the output format "xml"' in result.stderr


def test_bad_request_timeout_uses_kubectls_words() -> None:
    result = dr("version", "--request-timeout", "soon")
    assert result.returncode == 2
    assert "Invalid timeout value. Timeout must be a single integer in seconds" in result.stderr


def test_global_flags_are_accepted_after_the_subcommand(kubeconfig: Path) -> None:
    result = dr("version", "-n", "elsewhere", "--kubeconfig", str(kubeconfig), "--request-timeout=2s")
    # Reaches the (dead) server: proves the flags were parsed wherever they stood.
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "The connection to the server 127.0.0.1:1 was refused - did you specify the right host or port?"
    )


def test_missing_kubeconfig_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = dr("version", "--kubeconfig", str(missing))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: stat {missing}: no such file or directory"


def test_no_kubeconfig_anywhere(tmp_path: Path) -> None:
    env = clean_env({"HOME": str(tmp_path)})
    result = dr("version", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no configuration has been provided")
    assert "--kubeconfig" in result.stderr


def test_unknown_context(kubeconfig: Path) -> None:
    result = dr("version", "--kubeconfig", str(kubeconfig), "--context", "prod")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: context was not found for specified context: prod"
    assert "dead-ctx" in lines[1]


def test_unknown_cluster_and_user_overrides(kubeconfig: Path) -> None:
    cluster = dr("version", "--kubeconfig", str(kubeconfig), "--cluster", "nope")
    assert (cluster.returncode, cluster.stderr.strip()) == (1, 'error: no server found for cluster "nope"')
    user = dr("version", "--kubeconfig", str(kubeconfig), "--user", "nope")
    assert (user.returncode, user.stderr.strip()) == (1, 'error: auth info "nope" does not exist')


def test_kubeconfig_env_with_several_files_is_merged(tmp_path: Path, kubeconfig: Path) -> None:
    first = tmp_path / "first"
    first.write_text("apiVersion: v1\nkind: Config\ncurrent-context: dead-ctx\n")
    env = clean_env({"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "absent"), str(kubeconfig)])})
    result = dr("version", env=env)
    assert result.returncode == 1
    assert "The connection to the server 127.0.0.1:1 was refused" in result.stderr


def test_completion_protocol_lists_subcommands_and_ends_with_directive() -> None:
    result = run([executable("kubectl_complete-dr"), ""])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.split("\t")[0] for line in lines[:-1]]
    assert {"pvc", "etcd", "scale", "backups", "version", "completion"} <= set(names)
    assert lines[-1] == ":4"


def test_completion_protocol_completes_flags() -> None:
    result = run([executable("kubectl_complete-dr"), "version", "--cl"])
    assert result.stdout.splitlines()[0].split("\t")[0] == "--client"
    assert result.stdout.splitlines()[-1].startswith(":")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    result = dr("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_KUBECTL_DR_COMPLETE" in result.stdout


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_kubectl_finds_and_runs_the_plugin(version: str) -> None:
    env = clean_env()
    listed = run([kubectl(version), "plugin", "list", "--name-only"], env=env)
    assert "kubectl-dr" in listed.stdout.split()
    result = run([kubectl(version), "dr", "version", "--client"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Plugin Version: v")


def test_usage_reads_kubectl_dr_when_run_through_kubectl() -> None:
    # kubectl passes its environment on; `_` names the program the shell started.
    env = clean_env({"_": kubectl("1.33")})
    result = run([kubectl("1.33"), "dr", "--bogus"], env=env)
    assert result.returncode == 2
    assert "See 'kubectl dr --help' for usage." in result.stderr
    help_text = run([kubectl("1.33"), "dr", "--help"], env=env)
    assert help_text.stdout.startswith("Usage: kubectl dr [OPTIONS] COMMAND")


def test_kubectl_plugin_completion_uses_kubectl_complete_dr() -> None:
    result = run([kubectl("1.33"), "__complete", "dr", ""], env=clean_env())
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert "pvc" in names and "etcd" in names
    assert names[-1] == ":4"


def test_bare_dry_run_is_client_with_kubectls_warning(tmp_path: Path) -> None:
    # kubectl reads a bare --dry-run as client (deprecated): the next word stays the sub-command.
    result = dr("--dry-run", "backups", "list", "--repo", str(tmp_path / "repo"), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"] == []
    assert "--dry-run is deprecated and can be replaced with --dry-run=client." in result.stderr
    # A client dry run creates nothing, not even the repository directory.
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(("args", "suggestion"), [(["pvc", "bakup"], "'backup'"), (["pvcs"], "'pvc'")])
def test_an_unknown_command_suggests_once(args: list[str], suggestion: str) -> None:
    result = dr(*args)
    assert result.returncode == 2
    assert result.stderr.count("Did you mean") == 1, result.stderr
    assert f"Did you mean {suggestion}?" in result.stderr
