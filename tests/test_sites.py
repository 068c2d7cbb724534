"""The whole pipeline on a repo unlike the demo (``tests/sites``): two feature views on different
join keys (hourly weather by site, short TTL; device profiles by device, long TTL), the cohort is a
join key, label rows with time ties, string features and label-row features, regression and
multiclass targets, naive nanosecond label times, duplicate weather rows broken by created time.

The oracle for "which partitions does a change reach" is the generator's own pandas as-of join
(``tests.sites.generate._as_of``), which shares no code with the library.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from retrain_plugins import asof_training_set, build_definitions, feast_training_set, load_feature_service_view
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.layout import model_store_root, training_set_path
from retrain_plugins.partitions import PartitionKey, windows
from retrain_plugins.routing import RoutedModel
from retrain_plugins.store import ModelStore
from retrain_plugins.training import build_training_set

from .sites import changes
from .sites.generate import SitesConfig, _as_of, load_source
from .sites.project import new_sites_project

CONFIG = SitesConfig()
MONTHS = [CONFIG.month_start(i) for i in range(CONFIG.months)]


class Sites:
    """A sites project on an ephemeral Dagster instance."""

    def __init__(self, root: Path, spec, defs=None):
        from dagster import DagsterInstance

        self.root, self.spec = root, spec
        self.defs = defs or build_definitions(spec)
        self.instance = DagsterInstance.ephemeral()
        self.sensor = f"{spec.name}_change_sensor"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def digests(self) -> dict[PartitionKey, str]:
        store = ModelStore(model_store_root(self.spec))
        return {k: hashlib.sha256(store.path_of(e).read_bytes()).hexdigest() for k, e in store.entries().items()}

    def run(self, requests) -> None:
        assert all(r.success for r in execute(self.defs, self.spec, requests, self.instance))


def _build(root: Path, task: str = "regression") -> Sites:
    root, spec = new_sites_project(root, CONFIG, task=task)
    return Sites(root, spec)


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory) -> Path:
    project = _build(tmp_path_factory.mktemp("sites") / "project")
    assert materialize_all(project.defs, project.spec, project.instance).success
    return project.root


def _copy_trained(template: Path, root: Path) -> Sites:
    """A copy of the fully trained regression project at ``root``, its sensor settled on the copy's files."""
    from retrain_plugins import apply_feature_repo

    from .sites.project import sites_spec

    shutil.copytree(template, root)
    spec = sites_spec(root, "regression", CONFIG)
    apply_feature_repo(spec.feature_repo, in_process=True)
    project = Sites(root, spec)
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    return project


@pytest.fixture
def trained(trained_template, tmp_path) -> Sites:
    """A copy of the fully trained regression project, its sensor settled on the copy's files."""
    return _copy_trained(trained_template, tmp_path / "project")


def _oracle(data: Path) -> dict[PartitionKey, pd.DataFrame]:
    """Each partition's label rows with their as-of features, by the generator's pandas join."""
    events = load_source(data, "events")
    joined = _as_of(events, load_source(data, "weather"), load_source(data, "devices"))
    joined["window"] = joined["event_time"].dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.strftime("%Y-%m-%d")
    out = {}
    for (window, site), part in joined.groupby(["window", "site"]):
        columns = sorted(part.columns)
        out[PartitionKey(window, site)] = part[columns].sort_values(columns, kind="stable").reset_index(drop=True)
    return out


def _reached(before: dict, after: dict) -> set[PartitionKey]:
    return {k for k in set(before) | set(after) if k not in before or k not in after or not before[k].equals(after[k])}


def _joined_hour(data: Path, site: str, month: int, nth: int = 0) -> datetime:
    """A weather hour of ``site`` that a label row of ``month`` joins (the latest at or before it)."""
    events = load_source(data, "events")
    times = sorted(events.loc[(events["site"] == site) & (events["event_time"].dt.month == month), "event_time"])
    hours = changes.weather_hours(data, site)
    label = times[nth * 7 % len(times)]
    return max(h for h in hours if h <= label).to_pydatetime()


def _requested(project: Sites, result) -> dict[PartitionKey, str]:
    import json

    from retrain_plugins.dagster.tags import REASONS_TAG

    out = {}
    for request in result.run_requests:
        for key, reason in json.loads(request.tags[REASONS_TAG]).items():
            out[PartitionKey(*key.split("/", 1))] = reason
    return out


def test_feast_and_duckdb_asof_frames_are_equal_row_by_row(tmp_path):
    project = _build(tmp_path / "p")
    spec = project.spec
    view = load_feature_service_view(spec)
    oracle = _oracle(project.data)
    for window in windows(spec):
        for site in spec.cohorts:
            feast = feast_training_set(spec, view, [window], site)
            asof = asof_training_set(spec, view, [window], [site])
            assert_frame_equal(feast, asof.select(feast.columns), check_dtypes=False)
            expected = oracle[PartitionKey(window.key, site)]
            assert feast.height == len(expected) > 100
            # Same values as the independent pandas join, string features and created-time ties included.
            for column in ("temperature", "condition", "firmware", "capacity"):
                got = sorted(map(str, feast[column].to_list()))
                want = sorted("None" if pd.isna(v) else str(v) for v in expected[column].tolist())
                assert got == want, (window.key, site, column)


def test_weather_rows_tied_on_created_time_are_harmless_when_equal_and_refused_when_they_differ(tmp_path):
    """The weather view breaks (site, hour) ties by ``created``; a row that ties the winner on its
    created time too is harmless with the same values, refused (naming the view) with others, and a
    newer correction wins. Identical for both retrieval paths' joins (the frames equal Feast's)."""
    from retrain_plugins.errors import DataError

    from .sites.generate import write_parquet

    project = _build(tmp_path / "p")
    spec = project.spec
    view = load_feature_service_view(spec)
    site, window = spec.cohorts[0], [w for w in windows(spec) if w.start.month == 2]
    hour = pd.Timestamp(_joined_hour(project.data, site, month=2))
    weather = load_source(project.data, "weather")
    ours = weather[(weather["site_id"] == site) & (weather["event_timestamp"] == hour)]
    winner = ours.sort_values("created").tail(1)
    before = asof_training_set(spec, view, window, [site])
    extra = project.data / "sources" / "weather" / MONTHS[1].strftime("%Y-%m") / "tie.parquet"
    write_parquet(winner, extra)  # the same row again: any copy stands for it
    assert_frame_equal(asof_training_set(spec, view, window, [site]), before)
    write_parquet(winner.assign(temperature=winner["temperature"] + 7.0), extra)
    with pytest.raises(DataError, match=r"feature view 'site_weather\w*'.*same key and event time and created time.*"
                       rf"site_id='{site}'.*Give such rows distinct created timestamps"):
        asof_training_set(spec, view, window, [site])
    newer = winner.assign(temperature=-40.0, created=winner["created"] + pd.Timedelta(seconds=1))
    write_parquet(newer, extra)  # a correction: the newest created time wins
    corrected = asof_training_set(spec, view, window, [site])
    assert -40.0 in corrected["temperature"].to_list() and -40.0 not in before["temperature"].to_list()
    assert_frame_equal(feast_training_set(spec, view, window, site), corrected.select(feast_training_set(spec, view, window, site).columns), check_dtypes=False)


def test_training_set_bytes_do_not_depend_on_file_row_order(tmp_path):
    """8 of 10 label times tie on real data: the frame's total order makes its bytes content-only."""
    project = _build(tmp_path / "p")
    spec = project.spec
    view = load_feature_service_view(spec)
    key = PartitionKey(windows(spec)[1].key, spec.cohorts[0])
    build_training_set(spec, view, None, key)
    first = training_set_path(spec, key).read_bytes()
    month = MONTHS[1].strftime("%Y-%m")
    path = next((project.data / "sources" / "events" / month).glob("*.parquet"))
    frame = pd.read_parquet(path)
    assert frame.duplicated(["site", "event_time"]).sum() > 10  # ties in time within a site
    frame.iloc[::-1].to_parquet(path)  # same rows, reversed
    build_training_set(spec, view, None, key)
    assert training_set_path(spec, key).read_bytes() == first
    shuffled = spec.model_copy(update={"retrieval": "duckdb_asof"})
    build_training_set(shuffled, view, None, key)
    assert pl.read_parquet(training_set_path(spec, key)).equals(pl.read_parquet(io.BytesIO(first)))


@pytest.mark.parametrize("change", ["weather", "device", "late_events"])
def test_sensor_requests_exactly_the_partitions_a_change_reaches(trained, change):
    project = trained
    before_data = _oracle(project.data)
    digests = project.digests()
    site = project.spec.cohorts[1]
    if change == "weather":
        changes.edit_weather(project.data, site, _joined_hour(project.data, site, month=2), temperature=45.0, condition="snow")
    elif change == "device":
        device = CONFIG.devices(site)[0]
        changes.change_device_profile(project.data, device, row=1, firmware="v7.0", capacity=5.0)
    else:
        changes.append_late_events(project.data, CONFIG, site, month_index=2, n=15, batch=1)
    expected = _reached(before_data, _oracle(project.data))
    assert expected and {k.cohort for k in expected} == {site}
    result = tick(project.defs, project.sensor, project.instance)
    requested = _requested(project, result)
    assert set(requested) == expected, (change, requested, expected)
    if change == "late_events":
        assert set(requested.values()) == {"late_data"}
    project.run(result.run_requests)
    after = project.digests()
    assert {k for k in after if after[k] != digests.get(k)} == expected
    assert {k: after[k] for k in digests if k not in expected} == {k: v for k, v in digests.items() if k not in expected}
    assert tick(project.defs, project.sensor, project.instance).run_requests == []


def _predictions(project: Sites) -> pl.DataFrame:
    spec = project.spec
    frame = asof_training_set(spec, load_feature_service_view(spec), windows(spec), None)
    scored = RoutedModel.load(model_store_root(spec)).predict(frame, timestamp_column=spec.labels.timestamp_column)
    return scored.select("served_by", "prediction", *[c for c in scored.columns if c.startswith("proba_")])


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_two_full_retrains_give_identical_training_sets_and_predictions(trained_template, tmp_path, task):
    from .sites.project import sites_spec

    runs = []
    for name in ("a", "b"):
        if name == "a" and task == "regression":
            # the module's template is a full retrain of a fresh regression project (_build, then
            # materialize_all) in another folder; it is only read here
            project = Sites(trained_template, sites_spec(trained_template, "regression", CONFIG))
        else:
            project = _build(tmp_path / name, task)
            assert materialize_all(project.defs, project.spec, project.instance).success
        sets = {k: training_set_path(project.spec, k).read_bytes() for k in project.digests()}
        runs.append((sets, _predictions(project)))
    (sets_a, pred_a), (sets_b, pred_b) = runs
    assert len(sets_a) == CONFIG.months * len(CONFIG.sites) and sets_a == sets_b
    assert pred_a.equals(pred_b)
    assert (pred_a["served_by"] != "fallback").all()


steps = st.one_of(
    st.tuples(st.just("weather"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("device"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(st.just("late"), st.integers(0, 2), st.integers(0, 2)),
)


def _apply(project: Sites, step: tuple, counter: list[int]) -> None:
    kind, site_i, arg = step
    counter[0] += 1
    site = CONFIG.sites[site_i]
    if kind == "weather":
        changes.edit_weather(project.data, site, _joined_hour(project.data, site, arg, counter[0]), temperature=float(counter[0]), condition="fog")
    elif kind == "device":
        changes.change_device_profile(project.data, CONFIG.devices(site)[arg], row=0, capacity=float(counter[0]))
    else:
        changes.append_late_events(project.data, CONFIG, site, month_index=arg, n=12, batch=counter[0])


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(steps, min_size=1, max_size=3))
@example([("weather", 1, 2), ("device", 0, 1), ("late", 2, 0)])
def test_partial_retraining_equals_full_retraining_on_the_sites_repo(trained_template, sequence):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # a fully trained project (a copy of the module's full retrain), its sensor settled on the copy
        project = _copy_trained(trained_template, Path(tmp) / "incremental")
        initial, ever, counter = project.digests(), set(), [0]
        data = _oracle(project.data)
        for step in sequence:
            _apply(project, step, counter)
            now = _oracle(project.data)
            expected = _reached(data, now)
            result = tick(project.defs, project.sensor, project.instance)
            assert set(_requested(project, result)) == expected, (step, expected)
            project.run(result.run_requests)
            ever |= expected
            data = now
        final = project.digests()
        assert {k: final[k] for k in initial if k not in ever} == {k: v for k, v in initial.items() if k not in ever}
        full_root = Path(tmp) / "full"
        full_root.mkdir()
        shutil.copytree(project.root / "feature_repo", full_root / "feature_repo")
        shutil.copytree(project.data / "sources", full_root / "data" / "sources")
        from retrain_plugins import apply_feature_repo

        from .sites.project import sites_spec

        spec = sites_spec(full_root, "regression", CONFIG)
        apply_feature_repo(spec.feature_repo, in_process=True)
        full = Sites(full_root, spec)
        assert materialize_all(full.defs, full.spec, full.instance).success
        assert _predictions(project).equals(_predictions(full))
        partial, fresh = ModelStore(model_store_root(project.spec)).entries(), ModelStore(model_store_root(full.spec)).entries()
        assert {k: e["fingerprint"] for k, e in partial.items()} == {k: e["fingerprint"] for k, e in fresh.items()}


def test_online_prediction_takes_every_join_key_and_the_request_time_columns(trained, capsys):
    """`retrain predict --entity site_id=..,device_id=..,hour_of_day=..,event_kind=..`: features of
    both views from Feast's online store (each entity's newest row), the cohort from the site key."""
    import yaml

    from retrain_plugins.cli.main import main
    from retrain_plugins.feast_store import feature_store
    from retrain_plugins.online import online_frame

    project = trained
    spec = project.spec
    site = spec.cohorts[2]
    devices = CONFIG.devices(site)[:2]
    entities = [{"site_id": site, "device_id": d, "hour_of_day": 9, "event_kind": "visit"} for d in devices]
    frame = online_frame(spec, feature_store(str(spec.feature_repo)), entities)
    weather = load_source(project.data, "weather")
    newest = weather[weather["site_id"] == site].sort_values(["event_timestamp", "created"]).iloc[-1]
    assert frame["temperature"].to_list() == [newest["temperature"]] * 2
    profiles = load_source(project.data, "devices").sort_values("event_timestamp")
    for device, firmware in zip(devices, frame["firmware"].to_list()):
        assert firmware == profiles[profiles["device_id"] == device].iloc[-1]["firmware"]
    assert frame["site"].to_list() == [site, site] and frame["device"].to_list() == devices
    spec_file = project.root / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(json.loads(spec.model_dump_json())))
    out = project.root / "scored.parquet"
    args = ["predict", "--spec", str(spec_file), "--output", str(out)]
    for e in entities:
        args += ["--entity", ",".join(f"{k}={v}" for k, v in e.items())]
    assert main(args) == 0
    scored = pl.read_parquet(out)
    assert scored["route"].to_list() == ["own_sub_model"] * 2
    assert scored["served_by"].to_list() == [f"{windows(spec)[-1].key}/{site}"] * 2
    expected = RoutedModel.load(model_store_root(spec)).predict(frame)["prediction"]
    assert scored["prediction"].equals(expected)
