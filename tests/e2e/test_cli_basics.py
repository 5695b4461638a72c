"""The installed executable, run as a subprocess: help, version, usage errors, kubeconfig errors, plugin."""

from __future__ import annotations

import json
import os
import re
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


SECTIONS = [("Volume Commands:", ["pvc", "scale"]), ("Application Commands:", ["namespace"]),
            ("etcd and Control-Plane Commands:", ["etcd", "control-plane"]),
            ("Rook-Ceph Commands:", ["rook"]), ("Backup Repository Commands:", ["backups"]),
            ("Schedule Commands:", ["schedule"]),
            ("Other Commands:", ["completion", "version", "options"])]


def _command_rows(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each section of a help text ("Commands:", "Volume Commands:" …) with its (name, summary) rows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        if line.endswith("Commands:") and not line.startswith(" "):
            current = sections.setdefault(line, [])
        elif current is not None and line.startswith("  ") and not line.startswith("   "):
            name, _, summary = line.strip().partition(" ")
            current.append((name, summary.strip()))
        elif current is not None and line.strip():
            current = None if not line.startswith(" ") else current
            assert not line.startswith("   "), f"a summary runs over one line: {line!r}"
    return sections


def _whole(summary: str) -> bool:
    """Not cut: no ellipsis, ends on a whole word (Click cuts at 45 characters and appends "...")."""
    return bool(summary) and not summary.endswith(("...", "…")) and (summary[-1].isalnum() or summary[-1] == ")")


def test_help_groups_commands_as_kubectl_does() -> None:
    """`kubectl dr --help`: the commands first, in titled sections in a fixed order, each with a one-line
    summary that is whole; then the global flags."""
    result = dr("--help")
    assert result.returncode == 0, result.stderr
    sections = _command_rows(result.stdout)
    assert [(title, [name for name, _ in rows]) for title, rows in sections.items()] == SECTIONS
    for title, rows in sections.items():
        for name, summary in rows:
            assert _whole(summary) and len(summary) <= 60, (title, name, summary)
    commands = result.stdout[result.stdout.index("Volume Commands:"):result.stdout.index("Global flags:")]
    assert "..." not in commands and "…" not in commands, commands


@pytest.mark.parametrize("command", ["pvc", "pvc backup", "etcd restore finalize", "schedule create etcd-snapshot",
                                     "backups prune", "version"])
def test_sub_command_help_ends_naming_the_global_options(command: str) -> None:
    # As kubectl's does: the global flags are not repeated in every help, the last line says where they are.
    result = dr(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == (
        'Use "kubectl-dr options" for a list of global command-line options (applies to all commands).')


def test_options_lists_every_global_flag_in_kubectls_layout() -> None:
    result = dr("options")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "The following options can be passed to any command:"
    for flag, text in (("    --kubeconfig='':", "\tPath to the kubeconfig file to use for CLI requests."),
                       ("    -n, --namespace='':", "\tIf present, the namespace scope for this CLI request"),
                       ("    -o, --output='table':", "\tOutput format. One of: (table, json, yaml)."),
                       ("    -y, --yes=false:", None), ("    -v, --v=0:", "\tnumber for the log level verbosity")):
        assert flag in lines, result.stdout
        if text:
            assert lines[lines.index(flag) + 1] == text


@pytest.mark.parametrize("group", ["pvc", "etcd", "etcd snapshots", "etcd restore", "etcd member", "scale",
                                   "backups", "schedule", "schedule create", "control-plane", "namespace"])
def test_every_group_lists_whole_one_line_summaries(group: str) -> None:
    result = dr(*group.split(), "--help")
    assert result.returncode == 0, result.stderr
    rows = _command_rows(result.stdout)["Commands:"]
    assert rows, result.stdout
    for name, summary in rows:
        assert _whole(summary) and len(summary) <= 60, (group, name, summary)


def test_every_command_has_a_summary_of_its_own() -> None:
    """A command added without a short_help would show Click's cut first sentence again."""
    import click
    import typer

    from kubectl_dr.cli.app import full_app

    def walk(command: click.Command, path: str) -> list[str]:
        missing = [] if command.short_help or not path else [path]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                missing += walk(sub, f"{path} {name}".strip())
        return missing

    assert walk(typer.main.get_command(full_app()), "") == []


def test_no_arguments_prints_help_and_succeeds() -> None:
    result = dr()
    assert result.returncode == 0
    assert "Usage: kubectl-dr [OPTIONS] COMMAND" in result.stdout


def test_version_client_needs_no_cluster() -> None:
    result = dr("version", "--client", subprocess=True)  # the installed executable, end to end
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


def test_an_option_missing_its_value_points_at_its_own_command() -> None:
    result = dr("pvc", "backup", "data", "--name")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: Option '--name' requires an argument.",
                                          "See 'kubectl-dr pvc backup --help' for usage."]
    bare = dr("pvc", "list", "-n")  # a global flag: hoisted bare, it once took `pvc` for its value
    assert bare.returncode == 2 and "Option '-n' requires an argument" in bare.stderr, bare.stderr


@pytest.mark.parametrize("verb", ["finalize", "rollback", "status"])
def test_the_restores_options_before_its_sub_command_are_refused(verb: str, tmp_path: Path) -> None:
    # They were dropped without a word, and `finalize` or `rollback` ran as if they had been given.
    result = dr("etcd", "restore", "--from", "latest", "--node-timeout", "60", verb, "--yes",
                extra_env={"KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == (f"error: --from, --node-timeout apply to the restore itself, not to "
                                             f"`etcd restore {verb}`"), result.stderr
    # The same options from the environment are no choice made on this line: the sub-command runs (and stops at
    # the missing kubeconfig).
    quiet = dr("etcd", "restore", verb, extra_env={"KUBECONFIG": str(tmp_path / "none"),
                                                   "KUBECTL_DR_REPO": str(tmp_path)})
    assert quiet.returncode == 1 and "no configuration has been provided" in quiet.stderr, quiet.stderr


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


def test_the_bash_completion_script_completes_in_bash(tmp_path: Path) -> None:
    # Sourced into a real bash and called as bash calls it on <TAB>: what lands in COMPREPLY.
    script = tmp_path / "complete.sh"
    script.write_text(
        "source <(kubectl-dr completion bash)\n"
        "for words in 'kubectl-dr pv' 'kubectl-dr pvc ba' 'kubectl-dr etcd restore fin'; do\n"
        "  read -r -a COMP_WORDS <<< \"$words\"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()\n"
        "  _kubectl_dr_completion kubectl-dr; echo \"${COMPREPLY[*]}\"\n"
        "done\n")
    result = run(["bash", str(script)], env=clean_env({"KUBECONFIG": str(tmp_path / "none")}))
    assert result.returncode == 0 and result.stdout.splitlines() == ["pvc", "backup", "finalize"], result


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_zsh_and_fish_scripts_ask_what_the_program_answers(shell: str, tmp_path: Path) -> None:
    # No zsh or fish on the test machine: the program is asked exactly as the printed script asks it.
    result = dr("completion", shell)
    assert result.returncode == 0, result.stderr
    [instruction] = set(re.findall(r"_KUBECTL_DR_COMPLETE=(\w+)", result.stdout))
    asked = clean_env({"_KUBECTL_DR_COMPLETE": instruction, "_TYPER_COMPLETE_ARGS": "kubectl-dr pvc ba",
                       "_TYPER_COMPLETE_FISH_ACTION": "get-args", "KUBECONFIG": str(tmp_path / "none")})
    answer = run([executable()], env=asked)
    assert answer.returncode == 0, answer.stderr
    assert "backup" in answer.stdout and "Back up a volume" in answer.stdout, answer.stdout


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


# Loaded first by the interpreter (PYTHONPATH): the moment a module of the CLI is imported, this process gets the
# SIGINT a user's Ctrl-C sends, so the interrupt lands exactly while the CLI is still being loaded.
_CTRL_C_WHILE_IMPORTING = """\
import os, signal, sys

# As on a terminal: Python's own Ctrl-C handler. A suite started in the background (`… &` without job control)
# passes SIGINT on ignored, and Python then installs none: the signal would be lost, not tested.
signal.signal(signal.SIGINT, signal.default_int_handler)

class _CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _CtrlC())
"""


@pytest.mark.parametrize("module", ["typer", "kubectl_dr.cli.app", "kubectl_dr.cli.etcd"])
def test_ctrl_c_while_the_cli_loads_is_one_line_and_exit_130(tmp_path: Path, module: str) -> None:
    """A Ctrl-C right after Enter (the wrong command, seen too late) ends as every interrupt does: no traceback."""
    (tmp_path / "sitecustomize.py").write_text(_CTRL_C_WHILE_IMPORTING.format(module=module))
    env = clean_env({"PYTHONPATH": str(tmp_path)})
    result = run([executable(), "etcd", "status"], env=env, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "error: interrupted by SIGINT\n"
