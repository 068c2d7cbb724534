"""Partitions of a retraining: time window x cohort.

One :class:`dagster.MultiPartitionsDefinition` per retraining (dimension ``window``: a Dagster
time-window definition; dimension ``cohort``: static values) is shared by the assets and the
sensor. Windows come from Dagster itself (``time_window_for_partition_key``), so the library's idea
of a window's interval is Dagster's. Keys are built with ``MultiPartitionKey``, never by string
formatting (the key string orders dimensions by name).

Cohort values are arbitrary strings in the data; Dagster static keys cannot contain ``| [ ] ,``,
so they are percent-encoded reversibly (:func:`encode_cohort`). Paths use a stricter encoding
(:func:`path_segment`) so no cohort value can escape a store directory, and every value, the empty
one and those longer than a file name can be included, maps to one bounded segment.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, unquote

if TYPE_CHECKING:  # Dagster is imported where a Dagster object is built: keys and paths need none of it
    from dagster import (
        DynamicPartitionsDefinition,
        MultiPartitionKey,
        MultiPartitionsDefinition,
        StaticPartitionsDefinition,
        TimeWindowPartitionsDefinition,
    )
    from dagster._core.instance import DynamicPartitionsStore

    from retrain_plugins.spec import RetrainingSpec

WINDOW = "window"
COHORT = "cohort"
_KEY_SAFE = "-_.~ !#$&'()*+:;<=>?@^`{}"  # everything printable but % | [ ] , / \ " is kept as is


def encode_cohort(cohort: str) -> str:
    """Cohort value -> Dagster partition key (reversible; no ``| [ ] ,``)."""
    return quote(cohort, safe=_KEY_SAFE)


def decode_cohort(key: str) -> str:
    """Dagster partition key -> cohort value."""
    return unquote(key)


#: Longest path segment :func:`path_segment` returns, in bytes. Leaves room under the common
#: 255-byte file-name limit for what the stores append (``.parquet``, ``.json``, temp-file affixes).
SEGMENT_MAX = 200
_DIGEST_HEX = 64  # sha256
_HASHED = re.compile(r"~[0-9a-fA-F]{64}\Z")


def _plain_segment(value: str) -> str:
    """Percent-encoding of ``value`` (UTF-8, lone surrogates passed through); dots-only names escaped."""
    segment = quote(value, safe="-_~", errors="surrogatepass")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment


def path_segment(value: str) -> str:
    """Cohort (or window) value -> one path segment: non-empty, at most :data:`SEGMENT_MAX` bytes.

    Two forms:

    * **plain**: the percent-encoding of the value (``quote`` with only ``A-Z a-z 0-9 - _ . ~``
      kept, every other byte as ``%XX`` with upper-case hex; a name of dots only has its dots
      escaped as ``%2E``). Used when that encoding is non-empty, at most :data:`SEGMENT_MAX`
      bytes, and does not end in ``~`` + 64 hex digits (either case). This is the encoding every
      store has used, so existing paths do not change.
    * **hashed**: ``<prefix>~<sha256 hex of the value's UTF-8>``, the prefix being the plain
      encoding cut to ``SEGMENT_MAX - 65`` bytes (never inside a ``%XX`` escape), so at most
      :data:`SEGMENT_MAX` bytes. Used for everything else: the empty value, long values, and
      the (contrived) values whose plain encoding ends like a hashed one.

    Never ambiguous, hence injective (up to a sha256 collision), and on case-insensitive
    file systems too:

    1. Plain forms are injective: percent-encoding of the UTF-8 bytes is, and the dots-only
       escape cannot collide because ``quote`` never escapes ``.``, so no other value's encoding
       holds ``%2E``.
    2. Plain and hashed forms are disjoint: every hashed form ends in ``~`` + 64 hex digits, and
       a plain form that would (in any letter case) is not used as a plain form. Since that test
       ignores case, a plain form and a hashed form also differ when case is ignored.
    3. Hashed forms of different values have different digests, in their last 64 characters
       (lower-case hex, so they also differ when case is ignored).

    Plain forms of values that differ only in letter case (``North``, ``north``) differ only in
    case: on a case-insensitive file system (macOS and Windows defaults) their training-set files
    would be one file. They are kept as they are (existing stores keep their paths); the reader
    of a training set checks that it belongs to its partition (:func:`retrain_plugins.training`),
    so such a clash fails that partition by name instead of training one cohort on another's rows.

    The segment is ASCII (``A-Z a-z 0-9 - _ . ~ %``): no separator, never ``.`` or ``..``, never
    empty. The real value is never parsed back from a path: manifests and ``bundle.json`` record
    it (``PartitionKey.cohort``).
    """
    plain = _plain_segment(value)
    if plain and len(plain) <= SEGMENT_MAX and not _HASHED.search(plain):
        return plain
    cut = SEGMENT_MAX - _DIGEST_HEX - 1
    prefix = plain[:cut]
    if len(plain) > cut and (escape := prefix.rfind("%", cut - 2)) != -1:
        prefix = prefix[:escape]  # do not cut a %XX escape in two
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}~{digest}"


class Window(NamedTuple):
    key: str
    start: datetime
    end: datetime


class PartitionKey(NamedTuple):
    """One sub-model's partition: a window key and a (decoded) cohort value."""

    window: str
    cohort: str

    def to_dagster(self) -> MultiPartitionKey:
        from dagster import MultiPartitionKey

        return MultiPartitionKey({WINDOW: self.window, COHORT: encode_cohort(self.cohort)})

    @classmethod
    def from_dagster(cls, key: str | MultiPartitionKey) -> "PartitionKey":
        from dagster import MultiPartitionKey

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
    from dagster import DailyPartitionsDefinition, MonthlyPartitionsDefinition, WeeklyPartitionsDefinition

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
    from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

    if spec.dynamic_cohorts:
        return DynamicPartitionsDefinition(name=f"{spec.name}_cohort")
    return StaticPartitionsDefinition([encode_cohort(c) for c in spec.cohorts])


def partitions_def(spec: RetrainingSpec) -> MultiPartitionsDefinition:
    """The one partitions definition of this retraining, used by assets and sensors alike."""
    from dagster import MultiPartitionsDefinition

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
