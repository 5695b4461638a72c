"""kubectl_dr.pauses: the pauses of a polling wait start short and settle at the wait's own period."""

from __future__ import annotations

import itertools

import pytest

from kubectl_dr.pauses import pauses


def test_pauses_double_from_the_first_up_to_the_period_and_stay_there() -> None:
    assert list(itertools.islice(pauses(1.0), 7)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_a_long_wait_asks_no_more_often_than_its_period_after_the_first_second() -> None:
    # 60 s of waiting at a 1 s period: the fixed pause made 60 looks; the growing one only 3 more (0.1, 0.2, 0.4
    # and 0.8 s in the first second and a half, then one a second).
    gen, waited, looks = pauses(1.0), 0.0, 0
    while waited < 60:
        waited += next(gen)
        looks += 1
    assert looks == 63


def test_a_first_pause_longer_than_the_period_is_the_period() -> None:
    assert list(itertools.islice(pauses(0.05), 3)) == [0.05, 0.05, 0.05]
    assert list(itertools.islice(pauses(2.0, first=0.25), 5)) == [0.25, 0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(("period", "first"), [(0.0, 0.1), (1.0, 0.0), (-1.0, 0.1)])
def test_a_pause_of_zero_is_refused(period: float, first: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        next(pauses(period, first))
