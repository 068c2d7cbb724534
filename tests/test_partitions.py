"""Partition keys, windows and the grouping of requests into runs."""

from __future__ import annotations

from pathlib import Path

from dagster import MultiPartitionKey
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain_plugins.partitions import (
    PartitionKey,
    decode_cohort,
    dependents,
    encode_cohort,
    partitions_def,
    path_segment,
    rectangles,
    training_windows,
    windows,
)

from .helpers import make_spec


@given(st.text(min_size=1, max_size=40))
def test_cohort_keys_round_trip_and_are_valid_dagster_keys(cohort):
    key = encode_cohort(cohort)
    assert decode_cohort(key) == cohort
    assert not set(key) & set("|[],")
    pk = PartitionKey("2025-01-01", cohort)
    assert PartitionKey.from_dagster(pk.to_dagster()) == pk
    assert PartitionKey.from_dagster(str(pk.to_dagster())) == pk


@given(st.text(min_size=1, max_size=40))
def test_path_segments_never_escape(cohort):
    segment = path_segment(cohort)
    assert "/" not in segment and "\\" not in segment
    assert segment not in (".", "..", "")
    assert (Path("/store") / segment).resolve().parent == Path("/store")


def test_windows_are_dagsters(tmp_path):
    spec = make_spec(tmp_path)
    ws = windows(spec)
    assert [w.key for w in ws] == ["2025-01-01", "2025-02-01", "2025-03-01"]
    assert ws[1].start.isoformat() == "2025-02-01T00:00:00+00:00"
    assert ws[1].end.isoformat() == "2025-03-01T00:00:00+00:00"
    definition = partitions_def(spec)
    assert len(definition.get_partition_keys()) == 12
    assert MultiPartitionKey({"window": "2025-02-01", "cohort": "north"}) in definition.get_partition_keys()


def test_lookback_spans_and_followers():
    keys = ["a", "b", "c", "d"]
    assert training_windows("c", keys, 1) == ["c"]
    assert training_windows("c", keys, 3) == ["a", "b", "c"]
    assert training_windows("a", keys, 3) == ["a"]
    assert dependents("b", keys, 2) == ["b", "c"]
    assert dependents("d", keys, 3) == ["d"]


WINDOW_KEYS = [f"2025-{m:02d}-01" for m in range(1, 13)]
COHORTS = ["east", "north", "south", "west", "x|y"]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.tuples(st.sampled_from(WINDOW_KEYS), st.sampled_from(COHORTS)), max_size=30))
def test_rectangles_cover_exactly(cells):
    keys = {PartitionKey(w, c) for w, c in cells}
    rects = rectangles(keys, WINDOW_KEYS, COHORTS)
    covered = [k for _, _, members in rects for k in members]
    assert sorted(covered) == sorted(keys)  # exact cover, no overlap
    order = COHORTS
    for start, end, members in rects:
        # the rectangle Dagster will run is exactly the members
        box = {
            PartitionKey(w, c)
            for w in WINDOW_KEYS[WINDOW_KEYS.index(start.window) : WINDOW_KEYS.index(end.window) + 1]
            for c in order[order.index(start.cohort) : order.index(end.cohort) + 1]
        }
        assert box == set(members)


def test_rectangles_group_a_new_month_into_one_run():
    keys = [PartitionKey("2025-06-01", c) for c in COHORTS]
    assert [(s, e) for s, e, _ in rectangles(keys, WINDOW_KEYS, COHORTS)] == [
        (PartitionKey("2025-06-01", "east"), PartitionKey("2025-06-01", "x|y"))
    ]
