"""Partition keys, windows and the grouping of requests into runs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from dagster import MultiPartitionKey
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain_plugins.partitions import (
    PartitionKey,
    decode_cohort,
    dependents,
    encode_cohort,
    partitions_def,
    SEGMENT_MAX,
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


def _segment_before_isolation(cohort: str) -> str:
    """``path_segment`` as deployed stores used it (before bounded segments)."""
    segment = quote(cohort, safe="-_~")
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment.replace("/", "%2F")


COHORT_VALUES = st.one_of(
    st.text(max_size=40),
    st.text(min_size=150, max_size=400),  # beyond the bound once encoded
    st.text(alphabet="日本東京é😀", min_size=20, max_size=120),  # 3-4 bytes per character, 9-12 encoded
    st.sampled_from(["", ".", "..", "...", " ", "~", "%", "%2E"]),
    st.builds(lambda a, h: f"{a}~{h}", st.text(max_size=20), st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64)),
)


@settings(max_examples=400, deadline=None)
@given(COHORT_VALUES)
def test_path_segments_are_bounded_non_empty_and_never_escape(cohort):
    segment = path_segment(cohort)
    assert 0 < len(segment.encode()) <= SEGMENT_MAX
    assert re.fullmatch(r"[A-Za-z0-9_.~%-]+", segment)  # ASCII: no separator, nothing to normalize
    assert "/" not in segment and "\\" not in segment
    assert segment not in (".", "..")
    assert (Path("/store") / segment).resolve().parent == Path("/store")


@settings(max_examples=300, deadline=None)
@given(st.lists(COHORT_VALUES, min_size=2, max_size=12, unique=True))
def test_path_segments_are_injective_also_when_case_is_ignored_for_hashed_ones(cohorts):
    segments = [path_segment(c) for c in cohorts]
    assert len(set(segments)) == len(cohorts)
    hashed = [s for s in segments if re.search(r"~[0-9a-f]{64}$", s)]
    plain = {s.lower() for s in segments if s not in hashed}
    assert not {s.lower() for s in hashed} & plain  # a hashed form never meets a plain one


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_short_names_keep_the_paths_deployed_stores_have(cohort):
    before = _segment_before_isolation(cohort)
    if before and len(before) <= SEGMENT_MAX and not re.search(r"~[0-9a-fA-F]{64}$", before):
        assert path_segment(cohort) == before


def test_values_that_cannot_be_plain_are_hashed_with_a_readable_prefix():
    long = "cohort-" + "x" * 293
    assert len(long.encode()) == 300
    segment = path_segment(long)
    assert len(segment) == SEGMENT_MAX and segment.startswith("cohort-xxx") and segment[-65] == "~"
    assert path_segment(long + "y") != segment  # same prefix, other digest
    assert path_segment("") == "~" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    lookalike = "a~" + "0" * 64
    assert path_segment(lookalike) != lookalike and path_segment(lookalike).startswith(lookalike[:10])
    unicode = "東" * 100  # 300 bytes of UTF-8, 900 encoded: the prefix never splits a %XX escape
    assert re.fullmatch(r"(%[0-9A-F]{2})+~[0-9a-f]{64}", path_segment(unicode))
    assert path_segment("north") == "north" and path_segment("..") == "%2E%2E" and path_segment("a/b") == "a%2Fb"


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
