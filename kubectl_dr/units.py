"""One way to say sizes, durations and counts, for every message and table kubectl dr prints."""

from __future__ import annotations


def size(value: float) -> str:
    """`1.5 GiB`, `64.0 KiB`, `512 B`: binary units, one decimal."""
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{int(number)} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{value} B"


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h10m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`count(1, "entry", "entries")` → "1 entry"; the plural defaults to the noun plus s."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
