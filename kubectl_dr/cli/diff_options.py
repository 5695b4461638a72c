"""The option both diffs take: what a script checks without reading the output."""

from __future__ import annotations

from typing import Annotated

import typer

ExitCodeOption = Annotated[bool, typer.Option(
    "--exit-code", help="Exit 1 when there are differences and 0 when there are none, as kubectl diff and "
                        "git diff --exit-code do (without it: 0 either way).")]
