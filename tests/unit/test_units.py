"""One set of units: sizes, rates, durations and ages as every message, table and progress line says them."""

from __future__ import annotations

import io
import re
import time

import pytest

from kubectl_dr import units
from kubectl_dr.ui.progress import Transfer


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (65536, "64.0 KiB"),
     (int(20.1 * 2**20), "20.1 MiB"), (3 * 2**30 // 2, "1.5 GiB"), (5 * 2**40, "5.0 TiB"), (2**60, "1024.0 PiB")],
)
def test_size_in_binary_units_with_a_space(value: int, expected: str) -> None:
    assert units.size(value) == expected


def test_rate_uses_the_units_of_sizes() -> None:
    assert units.rate(12.5 * 2**20) == "12.5 MiB/s"
    assert units.rate(0) == "0 B/s"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.04, "0.0s"), (2.34, "2.3s"), (9.9, "9.9s"), (9.97, "10s"), (45, "45s"), (185, "3m05s"),
     (7800, "2h10m"), (-1, "0.0s")],
)
def test_duration(seconds: float, expected: str) -> None:
    assert units.duration(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(-5, "0s"), (45, "45s"), (119, "119s"), (12 * 60, "12m"), (5 * 3600, "5h"), (3 * 86400, "3d")],
)
def test_age_as_kubectl_prints_it(seconds: float, expected: str) -> None:
    assert units.age(seconds) == expected


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_counts_in_binary_units() -> None:
    """rich's own speed column says MB/s (decimal) beside MiB: the bar speaks the one set of units."""
    screen = _Terminal()
    with Transfer("backup shop/data", 4 << 20, stream=screen) as bar:
        for _ in range(4):
            bar.advance(1 << 20)
            time.sleep(0.02)
    text = screen.getvalue()
    assert "4.0 MiB / 4.0 MiB" in text, text
    assert re.search(r"\d+\.\d (KiB|MiB|GiB)/s", text), text
    assert not re.search(r"\d ?(kB|MB|GB)(/s)?\b", text), text
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.rsplit("\r", 1)[-1])
    assert re.search(r"4\.0 MiB / 4\.0 MiB \d+\.\d (KiB|MiB|GiB)/s in \d+\.\ds$", last.strip()), last


def test_progress_lines_without_a_terminal_come_from_a_timer() -> None:
    """A stream that stalls still gets its line every interval (with a rate), not silence until it ends."""
    log = io.StringIO()
    with Transfer("restore shop/data", 10 << 20, stream=log, interval=0.1) as bar:
        bar.advance(1 << 20)  # then nothing more arrives for a while
        time.sleep(0.45)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert lines[0].startswith("restore shop/data: 1.0 MiB of ~10.0 MiB (10%), ") and "/s, ETA " in lines[0], lines
    assert lines[-1].startswith("restore shop/data: 1.0 MiB in ") and lines[-1].endswith("/s (done)"), lines


def test_no_eta_before_the_first_byte() -> None:
    log = io.StringIO()
    with Transfer("backup shop/data", 1 << 20, stream=log, interval=0.05):
        time.sleep(0.2)
    first = log.getvalue().splitlines()[0]
    assert first == "backup shop/data: 0 B of ~1.0 MiB (0%), 0 B/s", first


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 10.0), ({"KUBECTL_DR_PROGRESS_SECONDS": "0.2"}, 0.2), ({"KUBECTL_DR_PROGRESS_SECONDS": "soon"}, 10.0),
     ({"KUBECTL_DR_PROGRESS_INTERVAL": "3"}, 3.0), ({"KUBECTL_DR_PROGRESS_SECONDS": "-1"}, 10.0)],
)
def test_progress_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
                                                expected: float) -> None:
    for name in ("KUBECTL_DR_PROGRESS_SECONDS", "KUBECTL_DR_PROGRESS_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert Transfer("x", None).interval == expected
