"""Where kubectl's global flags may stand, and how their values are read."""

from __future__ import annotations

import click
import pytest
from typer.main import get_command as typer_command

from kubectl_dr.cli.globals import hoist, parse_request_timeout
from kubectl_dr.errors import UsageError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["pvc", "backup", "data", "-n", "shop"], ["-n", "shop", "pvc", "backup", "data"]),
        (["pvc", "backup", "-nshop", "data"], ["-nshop", "pvc", "backup", "data"]),
        (["--context=prod", "etcd", "status", "-o", "json"], ["--context=prod", "-o", "json", "etcd", "status"]),
        (
            ["pvc", "rescue", "data", "--yes", "--", "ls", "-n", "x"],
            ["--yes", "pvc", "rescue", "data", "--", "ls", "-n", "x"],
        ),
        (["backups", "list", "--repo", "/r"], ["backups", "list", "--repo", "/r"]),
        # A bare --dry-run is kubectl's deprecated spelling of client: it takes no value from the next word.
        (["--dry-run", "backups", "list"], ["--dry-run=unchanged", "backups", "list"]),
        (["pvc", "backup", "data", "--dry-run"], ["--dry-run=unchanged", "pvc", "backup", "data"]),
        (["pvc", "backup", "--dry-run", "data"], ["--dry-run=unchanged", "pvc", "backup", "data"]),
        (["pvc", "backup", "--dry-run", "server", "data"], ["--dry-run", "server", "pvc", "backup", "data"]),
    ],
)
def test_hoist_moves_global_flags_to_the_front(argv: list[str], expected: list[str]) -> None:
    assert hoist(argv) == expected


@pytest.mark.parametrize("argv", [["pvc", "list", "-n"], ["version", "--kubeconfig"], ["backups", "list", "--context"]])
def test_a_global_flag_last_without_its_value_is_refused(argv: list[str]) -> None:
    # Hoisted bare, it took the noun for its value: `pvc list -n` said "No such command 'list'".
    with pytest.raises(click.BadOptionUsage, match=f"Option '{argv[-1]}' requires an argument"):
        hoist(argv)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", None), ("30", 30.0), ("1s", 1.0), ("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5)],
)
def test_request_timeout_follows_kubectl(value: str, seconds: float | None) -> None:
    assert parse_request_timeout(value) == seconds


@pytest.mark.parametrize("value", ["soon", "1 s", "-1s", "1d", ""])
def test_request_timeout_rejects_what_kubectl_rejects(value: str) -> None:
    with pytest.raises(UsageError, match="Invalid timeout value"):
        parse_request_timeout(value)


@pytest.mark.parametrize(("value", "seconds"), [("300", 300.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0),
                                                (45, 45.0)])
def test_a_duration_flag_takes_seconds_or_a_go_duration(value: str | int, seconds: float) -> None:
    from kubectl_dr.cli.durations import Duration

    assert Duration(10).convert(value, None, None) == seconds


@pytest.mark.parametrize(("value", "why"), [("5x", "is not a duration"), ("5s", "is less than 10 seconds"),
                                            ("0", "is less than 10 seconds")])
def test_a_wrong_duration_names_its_flag(value: str, why: str) -> None:
    from kubectl_dr.cli.etcd import app

    command = click.Group(commands={"etcd": typer_command(app)})
    with pytest.raises(click.BadParameter, match=why) as info:
        command.main(["etcd", "restore", "--from", "latest", "--node-timeout", value], standalone_mode=False)
    assert info.value.format_message().startswith("Invalid value for '--node-timeout': ")


def test_a_text_timeout_is_refused_naming_its_flag() -> None:
    from kubectl_dr.cli.durations import positive_seconds

    assert positive_seconds("2m") == 120.0
    with pytest.raises(UsageError, match="--timeout 'abc' is not a duration"):
        positive_seconds("abc")
    with pytest.raises(UsageError, match="--timeout must be greater than 0"):
        positive_seconds("0")
