"""Where kubectl's global flags may stand, and how their values are read."""

from __future__ import annotations

import click
import pytest

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
