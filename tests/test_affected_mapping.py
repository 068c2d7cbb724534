"""Unit tests of which windows a changed row can reach (label windows, feature TTL, boundaries)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from retrain_plugins.changes.scan import reached_windows
from retrain_plugins.partitions import windows

from .helpers import make_spec

DAY = 24 * 3600.0


def _us(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1e6)


@pytest.fixture
def monthly(tmp_path):
    return windows(make_spec(tmp_path))  # 2025-01, 2025-02, 2025-03


@pytest.mark.parametrize(
    ("row", "reach", "expected"),
    [
        # label rows reach exactly their own window (reach 0), boundaries belong to the later window
        (_us(2025, 1, 31, 23, 59), 0.0, {"2025-01-01"}),
        (_us(2025, 2, 1), 0.0, {"2025-02-01"}),
        # a feature row at a window start can be joined by labels of that window only (not the past)
        (_us(2025, 2, 1), 7 * DAY, {"2025-02-01"}),
        # a feature row late in January is joined by labels up to 7 days later: Jan and Feb
        (_us(2025, 1, 28), 7 * DAY, {"2025-01-01", "2025-02-01"}),
        # TTL longer than a window: Jan 15 + 62 days reaches into March
        (_us(2025, 1, 15), 62 * DAY, {"2025-01-01", "2025-02-01", "2025-03-01"}),
        # row exactly TTL before a window start is still joinable at that instant (Feast: >=)
        (_us(2025, 2, 22), 7 * DAY, {"2025-02-01", "2025-03-01"}),
        (_us(2025, 2, 21, 23, 59), 7 * DAY, {"2025-02-01"}),
        # no TTL: every later window
        (_us(2025, 1, 10), float("inf"), {"2025-01-01", "2025-02-01", "2025-03-01"}),
        # before the first window, within TTL
        (_us(2024, 12, 28), 7 * DAY, {"2025-01-01"}),
        (_us(2024, 12, 1), 7 * DAY, set()),
    ],
)
def test_reached_windows(monthly, row, reach, expected):
    assert reached_windows(monthly, row, row, reach) == expected


def test_a_range_reaches_the_union(monthly):
    lo, hi = _us(2025, 1, 5), _us(2025, 2, 27)
    assert reached_windows(monthly, lo, hi, 0.0) == {"2025-01-01", "2025-02-01"}
    assert reached_windows(monthly, lo, hi, timedelta(days=3).total_seconds()) == {"2025-01-01", "2025-02-01", "2025-03-01"}
