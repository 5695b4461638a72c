"""A duration flag as kubectl takes one: seconds (`300`) or a Go duration (`90s`, `5m`, `1h30m`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kubectl_dr.cli.globals import parse_request_timeout
from kubectl_dr.errors import UsageError

if TYPE_CHECKING:
    _ParamType = click.ParamType[float]
else:  # click 8.2.1, which pyproject allows, cannot subscript it at run time (later versions can)
    _ParamType = click.ParamType


class Duration(_ParamType):
    """Seconds as a float, never less than `minimum`; a wrong value is refused naming its flag."""

    name = "duration"

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = parse_request_timeout(str(value)) or 0.0
            except UsageError:
                self.fail(f"{value!r} is not a duration: give seconds (300) or a duration (90s, 5m, 1h30m)",
                          param, ctx)
        if seconds < self.minimum:
            self.fail(f"{value!r} is less than {self.minimum:g} seconds", param, ctx)
        return seconds


def positive_seconds(text: str, flag: str = "--timeout") -> float:
    """A flag's duration given as text (its default shown as `5m`): seconds, more than 0, or a usage error naming
    the flag."""
    try:
        seconds = parse_request_timeout(text)
    except UsageError:
        raise UsageError(f"{flag} {text!r} is not a duration: give seconds (300) or a duration (90s, 5m, 1h)") from None
    if seconds is None:
        raise UsageError(f"{flag} must be greater than 0 (e.g. 90s, 5m)")
    return seconds
