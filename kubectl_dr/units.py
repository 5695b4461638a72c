"""One way to say sizes, rates, durations, ages and counts, for every message, table and progress line.

Binary units (KiB, MiB, GiB: what `du`, `ls -h` and Kubernetes' `Mi`/`Gi` quantities count in) with a space
between number and unit, in prose and tables alike (`20.1 MiB`, `12.0 MiB/s`): the SI/IEC way of writing a
quantity, as restic writes it, and one style means one function. A table cell may thus hold a space, as
kubectl's own RESTARTS column does (`1 (5m ago)`); scripts take exact bytes and seconds from `-o json|yaml`.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: float) -> str:
    """`1.5 GiB`, `64.0 KiB`, `512 B`: binary units, one decimal."""
    number = float(value)
    for unit in _UNITS:
        if abs(number) < 1024 or unit == _UNITS[-1]:
            return f"{int(number)} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    raise AssertionError("unreachable: the last unit takes any number")


def rate(bytes_per_second: float) -> str:
    """`12.3 MiB/s`: a size per second, in the same units as every size."""
    return f"{size(bytes_per_second)}/s"


def duration(seconds: float) -> str:
    """`2.3s` (under ten seconds, where a tenth still tells something), `45s`, `3m05s`, `2h10m`."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def age(seconds: float) -> str:
    """kubectl's AGE column: `45s`, `12m`, `5h`, `3d` (coarser as it grows; never negative)."""
    whole = max(int(seconds), 0)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    if whole < 2 * 86400:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`count(1, "entry", "entries")` → "1 entry"; the plural defaults to the noun plus s."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
