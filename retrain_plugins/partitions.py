"""Partitions of a retraining: time window x cohort.

One :class:`dagster.MultiPartitionsDefinition` per retraining (dimension ``window``: a Dagster
time-window definition; dimension ``cohort``: static values) is shared by the assets and the
sensor. Windows come from Dagster itself (``time_window_for_partition_key``), so the library's idea
of a window's interval is Dagster's. Keys are built with ``MultiPartitionKey``, never by string
formatting (the key string orders dimensions by name).

Cohort values are arbitrary strings in the data; Dagster static keys cannot contain ``| [ ] ,``,
so they are percent-encoded reversibly (:func:`encode_cohort`). Paths use a stricter encoding
(:func:`path_segment`) so no cohort value can escape a store directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, unquote

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster._core.instance import DynamicPartitionsStore

WINDOW = "window"
COHORT = "cohort"
_KEY_SAFE = "-_.~ !#$&'()*+:;<=>?@^`{}"  # everything printable but % | [ ] , / \ " is kept as is


def encode_cohort(cohort: str) -> str:
    """Cohort value -> Dagster partition key (reversible; no ``| [ ] ,``)."""
    return quote(cohort, safe=_KEY_SAFE)


def decode_cohort(key: str) -> str:
    """Dagster partition key -> cohort value."""
    return unquote(key)


def path_segment(cohort: str) -> str:
    """Cohort value -> one safe path segment (no separators, never ``.`` or ``..``)."""
    segment = quote(cohort, safe="-_~")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment.replace("/", "%2F")


class Window(NamedTuple):
    key: str
    start: datetime
    end: datetime


class PartitionKey(NamedTuple):
    """One sub-model's partition: a window key and a (decoded) cohort value."""

    window: str
    cohort: str

    def to_dagster(self) -> MultiPartitionKey:
        return MultiPartitionKey({WINDOW: self.window, COHORT: encode_cohort(self.cohort)})

    @classmethod
    def from_dagster(cls, key: str | MultiPartitionKey) -> "PartitionKey":
        if not isinstance(key, MultiPartitionKey):
            # The string form orders dimensions by name: "cohort|window".
            cohort, window = str(key).split("|")
            key = MultiPartitionKey({WINDOW: window, COHORT: cohort})
        dims = key.keys_by_dimension
        return cls(dims[WINDOW], decode_cohort(dims[COHORT]))

    def __str__(self) -> str:
        return f"{self.window}/{self.cohort}"


def window_partitions_def(spec: RetrainingSpec) -> TimeWindowPartitionsDefinition:
    """Dagster's time windows of the spec, in its time zone; weekly windows start on ``start``'s weekday."""
    w = spec.windows
    start = w.start.isoformat()
    end = w.end.isoformat() if w.end else None
    if w.granularity == "weekly":
        # Dagster counts weekdays from Sunday (0); so does ``isoweekday() % 7``. Without this, a
        # start that is no Sunday would silently begin at the next Sunday and lose the days between.
        return WeeklyPartitionsDefinition(start_date=start, end_date=end, timezone=w.timezone, day_offset=w.start.isoweekday() % 7)
    cls = {"daily": DailyPartitionsDefinition, "monthly": MonthlyPartitionsDefinition}[w.granularity]
    return cls(start_date=start, end_date=end, timezone=w.timezone)


def cohort_partitions_def(spec: RetrainingSpec) -> StaticPartitionsDefinition | DynamicPartitionsDefinition:
    """Static cohort keys from the spec, or a dynamic dimension named ``<name>_cohort``."""
    if spec.dynamic_cohorts:
        return DynamicPartitionsDefinition(name=f"{spec.name}_cohort")
    return StaticPartitionsDefinition([encode_cohort(c) for c in spec.cohorts])


def partitions_def(spec: RetrainingSpec) -> MultiPartitionsDefinition:
    """The one partitions definition of this retraining, used by assets and sensors alike."""
    return MultiPartitionsDefinition({WINDOW: window_partitions_def(spec), COHORT: cohort_partitions_def(spec)})


def cohorts(spec: RetrainingSpec, instance: "DynamicPartitionsStore | None" = None) -> list[str]:
    """Cohort values in Dagster's key order (a range of cohort keys follows this order).

    Static: the spec's cohorts. Dynamic: the instance's partitions of the cohort dimension.
    """
    if not spec.dynamic_cohorts:
        return list(spec.cohorts)
    if instance is None:
        raise ValueError(f"retraining {spec.name!r} has dynamic cohorts: pass the Dagster instance")
    return [decode_cohort(k) for k in instance.get_dynamic_partitions(f"{spec.name}_cohort")]


def windows(spec: RetrainingSpec) -> list[Window]:
    """Every window of the retraining, oldest first, as intervals [start, end) in the spec's time zone."""
    definition = window_partitions_def(spec)
    result = []
    for key in definition.get_partition_keys():
        tw = definition.time_window_for_partition_key(key)
        result.append(Window(key, tw.start, tw.end))
    return result


def training_windows(window: str, window_keys: Sequence[str], lookback: int) -> list[str]:
    """Windows whose labels sub-model ``window`` trains on: ``w-L+1 .. w`` (existing ones)."""
    i = window_keys.index(window)
    return list(window_keys[max(0, i - lookback + 1) : i + 1])


def dependents(window: str, window_keys: Sequence[str], lookback: int) -> list[str]:
    """Windows whose sub-models read ``window``'s labels: ``w .. w+L-1`` (the lookback followers)."""
    i = window_keys.index(window)
    return list(window_keys[i : i + lookback])


def all_partitions(spec: RetrainingSpec, instance: "DynamicPartitionsStore | None" = None) -> list[PartitionKey]:
    return [PartitionKey(w.key, c) for w in windows(spec) for c in cohorts(spec, instance)]


def rectangles(
    keys: Iterable[PartitionKey], window_keys: Sequence[str], cohort_order: Sequence[str]
) -> list[tuple[PartitionKey, PartitionKey, list[PartitionKey]]]:
    """Cover ``keys`` exactly with as few (window range x cohort range) rectangles as is easy.

    ``cohort_order`` is Dagster's order of the cohort keys (:func:`cohorts`). Dagster runs a
    partition *range* of a multi-partitioned asset with a single-run backfill
    policy as one run over the rectangle ``start..end`` in both dimensions, so each rectangle is one
    run; each rectangle comes with the keys it covers. Runs of consecutive windows per cohort are found first, then neighbouring cohorts (in
    Dagster's key order) with the same window run are merged.
    """
    wanted = set(keys)
    order = {w: i for i, w in enumerate(window_keys)}
    spans: list[tuple[int, int, str]] = []
    for cohort in cohort_order:
        idx = sorted(order[k.window] for k in wanted if k.cohort == cohort)
        start = prev = None
        for i in idx:
            if start is None:
                start = prev = i
            elif i == prev + 1:
                prev = i
            else:
                spans.append((start, prev, cohort))
                start = prev = i
        if start is not None:
            spans.append((start, prev, cohort))
    merged: list[tuple[int, int, str, str]] = []
    position = {c: i for i, c in enumerate(cohort_order)}
    for w0, w1, cohort in sorted(spans, key=lambda s: (s[0], s[1], position[s[2]])):
        if merged and merged[-1][:2] == (w0, w1) and position[merged[-1][3]] + 1 == position[cohort]:
            merged[-1] = (w0, w1, merged[-1][2], cohort)
        else:
            merged.append((w0, w1, cohort, cohort))
    result = []
    for w0, w1, c0, c1 in merged:
        inside = [
            k for k in wanted if w0 <= order[k.window] <= w1 and position[c0] <= position[k.cohort] <= position[c1]
        ]
        result.append((PartitionKey(window_keys[w0], c0), PartitionKey(window_keys[w1], c1), sorted(inside)))
    return result
