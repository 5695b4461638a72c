"""A run builds only the noun it runs (kubectl_dr/cli/lazy.py); users must not see a difference.

The reference is the whole tree built up front by Typer's own `get_command` of `full_app()`, in this same
process: every help text, usage error, exit code and completion answer of the lazy tree must equal its,
byte for byte, for every command path there is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from kubectl_dr.cli.app import NOUNS, full_app, root_command
from kubectl_dr.cli.complete import candidates
from kubectl_dr.cli.lazy import LazyCommands
from tests.cli_runner import clean_env, dr


def _paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _paths(sub, (*path, name))
    return found


EAGER = typer.main.get_command(full_app())
PATHS = _paths(EAGER)


def _resolve(command: click.Command, path: tuple[str, ...]) -> click.Command:
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _same(*args: str) -> tuple[int, str, str]:
    eager = dr(*args, tree=EAGER)  # a Click tree keeps no state between runs
    lazy = dr(*args)
    assert (lazy.returncode, lazy.stdout, lazy.stderr) == (eager.returncode, eager.stdout, eager.stderr), args
    return lazy.returncode, lazy.stdout, lazy.stderr


def test_the_tree_has_every_command() -> None:
    """The walk below covers what the CLI has (a broken walk would compare nothing)."""
    assert len(PATHS) >= 56
    assert ("pvc", "backup") in PATHS and ("etcd", "restore", "finalize") in PATHS and ("ns", "backup") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "root")
def test_every_help_is_the_same(path: tuple[str, ...]) -> None:
    code, out, _ = _same(*path, "--help")
    assert code == 0 and out.startswith("Usage: kubectl-dr"), out


def _lists_its_commands(path: tuple[str, ...]) -> bool:
    """A group that prints its help when given nothing (`etcd restore` alone runs a restore instead)."""
    group = _resolve(EAGER, path)
    return isinstance(group, click.Group) and not group.invoke_without_command


@pytest.mark.parametrize("path", [p for p in PATHS if _lists_its_commands(p)], ids=lambda p: " ".join(p) or "root")
def test_every_group_without_arguments_is_the_same(path: tuple[str, ...]) -> None:
    code, out, _ = _same(*path)
    assert code == 0 and "Commands:" in out, out


@pytest.mark.parametrize("args", [
    ["pvcs"], ["nx"], ["bogus"], ["etcd", "restor"], ["pvc", "bogus"], ["pvc", "backup"],
    ["pvc", "backup", "--bogus"], ["pvc", "backup", "data", "--quiesce"], ["etcd", "restore", "--from"],
    ["backups", "prune", "--keep-last", "x"], ["-o", "bogus", "version", "--client"], ["--bogus"], ["options"],
    ["completion", "bash"], ["completion", "zsh"], ["completion", "tcsh"], ["version", "--client", "-o", "json"],
    ["-h"], ["pvc", "-h"], ["namespace", "backup", "-h"], ["--dry-run", "backups", "list", "--help"],
])
def test_usage_errors_and_small_commands_are_the_same(args: list[str]) -> None:
    _same(*args)


def _completion_words() -> list[list[str]]:
    words: list[list[str]] = [[""], ["p"], ["n"], ["-"], ["--"], ["-n", "shop", "e"], ["--output=json", ""]]
    for path in PATHS:
        words += [[*path, ""], [*path, "-"]]
    return words


def test_completion_answers_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands, flags and the directive, with lookups that fail (no kubeconfig, no repository) the same way."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("KUBECTL_DR_REPO", str(tmp_path / "missing-repo"))
    for words in _completion_words():
        assert candidates(words) == candidates(words, EAGER), words
    nouns = [name for name, _ in candidates([""])[0]]
    assert nouns[:4] == ["completion", "version", "options", "pvc"] and "ns" not in nouns, nouns


def test_completing_one_noun_builds_only_that_noun() -> None:
    root = root_command()
    candidates(["pvc", "backup", "--qu"], root)
    assert isinstance(root.commands, LazyCommands)
    assert set(root.commands.built()) == {"completion", "version", "options", "pvc"}


def modules_after(args: list[str]) -> tuple[set[str], str]:
    """The modules a fresh interpreter holds after the CLI answered `args`, and what it printed."""
    code = (
        "import sys\n"
        "from kubectl_dr.cli.main import run\n"
        f"code = run({args!r})\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=True)
    return set(result.stderr.split()), result.stdout


def test_the_root_help_builds_no_noun() -> None:
    loaded, out = modules_after(["--help"])
    assert {noun.module for noun in NOUNS} & loaded == set(), loaded
    # Nor what only a command that runs needs: the kubeconfig loader (and YAML), package metadata.
    assert {"yaml", "kubectl_dr.kube.kubeconfig", "importlib.metadata"} & loaded == set()
    assert "Volume Commands:" in out


def test_running_a_noun_builds_only_that_noun() -> None:
    loaded, _ = modules_after(["scale", "--help"])
    assert {noun.module for noun in NOUNS} & loaded == {"kubectl_dr.cli.scale"}, loaded
