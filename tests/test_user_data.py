"""Data and definitions shaped like a user's, on the demo repo: timestamp units and zones,
duplicate feature rows, relative source paths, mismatched keys, unsupported Feast objects, windows."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrain_plugins import (
    DataError,
    SpecError,
    apply_feature_repo,
    asof_training_set,
    build_definitions,
    feast_training_set,
    load_feature_service_view,
)
from retrain_plugins.dagster.execution import tick
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.partitions import windows
from retrain_plugins.sources import inspect_file, sources
from retrain_plugins.labels import label_rows

from .helpers import make_spec


def _file(project, source: str, month: str) -> Path:
    return project.data / "sources" / source / f"month={month}" / "part-0.parquet"


def _rewrite_with_pandas(path: Path, column: str, zone: str | None) -> None:
    """Rewrite ``path`` as pandas writes it: nanosecond timestamps, naive or in ``zone``."""
    frame = pl.read_parquet(path).to_pandas()
    values = frame[column].dt.tz_convert("UTC").dt.tz_localize(None) if frame[column].dt.tz is not None else frame[column]
    frame[column] = values.astype("datetime64[ns]")
    if zone is not None:
        frame[column] = frame[column].dt.tz_localize("UTC").dt.tz_convert(zone)
    frame.to_parquet(path)  # pandas' default: ns


def test_nanosecond_naive_and_zoned_timestamps_are_read_as_utc_and_change_nothing(materialized):
    """pandas-written files (ns, naive labels, zone-aware features) hold the same instants."""
    spec, project = materialized.spec, materialized
    assert tick(project.defs, project.sensor, project.instance).run_requests == []  # the copy's listing
    view = load_feature_service_view(spec)
    window = windows(spec)[1:2]
    before = asof_training_set(spec, view, window, ["north"])
    month = window[0].key[:7]
    _rewrite_with_pandas(_file(project, "labels", month), "label_timestamp", None)
    _rewrite_with_pandas(_file(project, "activity", month), "event_timestamp", "America/New_York")
    described = sources(spec, view)
    inspect_file(str(_file(project, "labels", month)), described["labels"])  # no "unreadable parquet"
    inspect_file(str(_file(project, "activity", month)), described["customer_activity_fv"])
    after = asof_training_set(spec, view, window, ["north"])
    assert_frame_equal(before, after, check_dtypes=False)
    feast = feast_training_set(spec, view, window, "north")
    assert_frame_equal(feast, after.select(feast.columns), check_dtypes=False)
    # The sensor reads the rewritten files, finds identical content: nothing to retrain.
    result = tick(project.defs, project.sensor, project.instance)
    assert result.run_requests == [], result.skip_message
    assert "2 changed file(s)" in result.skip_message and "unreadable" not in result.skip_message


def test_duplicate_feature_rows_equal_in_value_are_harmless_different_ones_refused(project):
    spec = project.spec
    view = load_feature_service_view(spec)
    window = windows(spec)[1:2]
    month = window[0].key[:7]
    labels = label_rows(spec, window, ["south"])
    before = asof_training_set(spec, view, window, ["south"])
    activity = pl.read_parquet(_file(project, "activity", month))
    # The row a label joins: the customer's latest snapshot at or before the label time.
    first = labels.row(0, named=True)
    joined = (
        activity.filter((pl.col("customer_id") == first["customer_id"]) & (pl.col("event_timestamp") <= first["label_timestamp"]))
        .sort("event_timestamp")
        .tail(1)
    )
    folder = _file(project, "activity", month).parent
    write_parquet(joined, folder / "copy.parquet")  # an identical duplicate in another file
    assert_frame_equal(asof_training_set(spec, view, window, ["south"]), before)
    feast = feast_training_set(spec, view, window, "south")  # whichever row Feast keeps, the values agree
    assert_frame_equal(feast, before.select(feast.columns), check_dtypes=False)
    write_parquet(joined.with_columns(pl.col("sessions_7d") + 1), folder / "copy.parquet")
    with pytest.raises(DataError, match=r"feature view 'customer_activity_fv'.*same key and event time.*"
                       rf"customer_id={first['customer_id']}.*Set the source's created_timestamp_column"):
        asof_training_set(spec, view, window, ["south"])


def test_relative_file_source_paths_resolve_against_the_repo_from_any_directory(project, tmp_path, monkeypatch):
    """As Feast resolves them (``FileSource.get_uri_for_file_path``): the sensor, runs and Feast agree."""
    features = project.spec.feature_repo / "features.py"
    text = features.read_text()
    needle = 'SOURCES = Path(__file__).resolve().parent.parent / "data" / "sources"'
    assert needle in text
    features.write_text(text.replace(needle, 'SOURCES = Path("../data/sources")'))
    apply_feature_repo(project.spec.feature_repo, in_process=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = project.spec
    view = load_feature_service_view(spec)
    assert all(Path(v.source_path).is_absolute() and str(spec.feature_repo) in v.source_path for v in view.views)
    window = windows(spec)[0:1]
    asof = asof_training_set(spec, view, window, ["east"])
    feast = feast_training_set(spec, view, window, "east")
    assert feast.height > 10 and feast.select(view.feature_columns).null_count().sum_horizontal().item() == 0
    assert_frame_equal(feast, asof.select(feast.columns), check_dtypes=False)
    assert os.getcwd() == str(elsewhere)  # Feast ran from the repo and the directory was restored
    first = tick(project.defs, project.sensor, project.instance)
    assert len(first.run_requests) == 1 and "unreadable" not in (first.skip_message or "")


def test_keys_that_do_not_match_the_feature_views_are_refused_where_definitions_load(project):
    wrong = make_spec(project.root, labels={"entity_column": None, "entity_columns": {"customer": "customer_id"}})
    with pytest.raises(SpecError, match=r"feature view 'customer_\w+_fv' of feature service 'churn_model_v1' joins on "
                       r"\['customer_id'\], but the label rows map only \['customer'\]"):
        build_definitions(wrong)
    extra = make_spec(project.root, labels={"entity_column": None, "entity_columns": {"customer_id": "customer_id", "site_id": "region"}})
    with pytest.raises(SpecError, match=r"labels.entity_columns maps \['site_id'\], which no feature view"):
        build_definitions(extra)


def test_a_feature_named_like_a_label_column_is_refused(project):
    frame = pl.read_parquet(_file(project, "labels", "2025-01"))
    write_parquet(frame.with_columns(pl.lit(1, pl.Int64).alias("sessions_7d")), _file(project, "labels", "2025-01"))
    spec = make_spec(project.root, labels={"feature_columns": ["sessions_7d"]})
    with pytest.raises(SpecError, match=r"feature 'sessions_7d' of feature view 'customer_activity_fv' has the name of a label-row column"):
        load_feature_service_view(spec)


def test_on_demand_feature_views_are_refused_by_name(project):
    features = project.spec.feature_repo / "features.py"
    features.write_text(
        features.read_text()
        + '''

from feast import RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
import pandas as pd

spend_request = RequestSource(name="spend_request", schema=[Field(name="basket", dtype=Float64)])


@on_demand_feature_view(sources=[customer_activity_fv, spend_request], schema=[Field(name="basket_share", dtype=Float64)])
def basket_share(inputs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"basket_share": inputs["basket"] / (inputs["spend_30d"] + 1.0)})


churn_model_v2 = FeatureService(name="churn_model_v2", features=[customer_activity_fv, basket_share])
'''
    )
    apply_feature_repo(project.spec.feature_repo, in_process=True)
    spec = make_spec(project.root, feature_service="churn_model_v2")
    with pytest.raises(SpecError, match=r"feature service 'churn_model_v2' uses on-demand feature view 'basket_share', which retraining does not support"):
        build_definitions(spec)


def test_windows_follow_the_spec_time_zone(project):
    """A label late on Jan 31 in New York is 04:00 UTC on Feb 1: it belongs to January there."""
    late = datetime(2025, 2, 1, 4, 0, tzinfo=timezone.utc)
    path = _file(project, "labels", "2025-02")
    frame = pl.read_parquet(path)
    write_parquet(frame.with_columns(pl.lit(late).cast(frame.schema["label_timestamp"]).alias("label_timestamp")).head(1), path.parent / "late.parquet")
    for zone, expected in (("UTC", "2025-02-01"), ("America/New_York", "2025-01-01")):
        spec = make_spec(project.root, windows={"timezone": zone})
        rows = label_rows(spec, windows(spec), None).filter(pl.col("label_timestamp") == late)
        assert rows["window"].to_list() == [expected], zone


@pytest.mark.parametrize(
    ("windows_", "message"),
    [
        ({"granularity": "monthly", "start": "2025-01-15"}, r"windows.start 2025-01-15 is not the start of a monthly window; the nearest are 2025-01-01 and 2025-02-01"),
        ({"granularity": "monthly", "end": "2025-03-10"}, r"windows.end 2025-03-10 is not a monthly window boundary"),
        ({"granularity": "weekly", "start": "2025-01-01", "end": "2025-02-01"}, r"weeks start on Wednesdays.*nearest are 2025-01-29 and 2025-02-05"),
        ({"timezone": "Mars/Olympus"}, r"windows.timezone 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_window_boundaries_and_zones_are_checked(tmp_path, windows_, message):
    with pytest.raises(Exception, match=message):
        make_spec(tmp_path, windows=windows_)


def test_weekly_windows_start_on_the_start_weekday(tmp_path):
    spec = make_spec(tmp_path, windows={"granularity": "weekly", "start": "2025-01-01", "end": "2025-01-29"})
    keys = [(w.key, w.start.date().isoformat(), w.end.date().isoformat()) for w in windows(spec)]
    assert keys[0] == ("2025-01-01", "2025-01-01", "2025-01-08") and len(keys) == 4
    assert keys[-1][2] == "2025-01-29"
