"""The "sites" test project (tests/sites/): deterministic data, a Feast repo that applies, and pure
Feast point-in-time retrieval checked against an independent pandas computation.

Feast's rules (FINDINGS.md): the latest feature row with ``event_timestamp <= t`` and
``event_timestamp + ttl >= t``, ties on the event timestamp broken by the newest ``created``
(whatever its relation to ``t``). The generated data has no tie Feast would break arbitrarily.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.sites import changes
from tests.sites.generate import SitesConfig, generate, load_source
from tests.sites.project import new_sites_project, sites_spec

CONFIG = SitesConfig()
WEATHER = ("temperature", "humidity", "condition")
DEVICE = ("firmware", "capacity", "age_days")
HOUR = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    """One generated, applied project shared by the read-only tests of this module."""
    root, _ = new_sites_project(tmp_path_factory.mktemp("sites") / "project")
    return root


def _store(root: Path):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(root / "feature_repo"))


def _labels(root: Path) -> pd.DataFrame:
    """The label rows as written (naive ns ``event_time``), with a row id."""
    files = sorted((root / "data" / "sources" / "events").glob("*/*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.assign(row=np.arange(len(frame)))


def _feast(root: Path, entities: pd.DataFrame) -> pd.DataFrame:
    """Pure Feast: the ``sites_model`` features of ``entities`` (site, device, event_time, row)."""
    store = _store(root)
    entity_df = entities.rename(columns={"site": "site_id", "device": "device_id"})[["site_id", "device_id", "event_time", "row"]]
    job = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service("sites_model"))
    return job.to_df().sort_values("row").set_index("row")[[*WEATHER, *DEVICE]]


def _latest(events: pd.DataFrame, rows: pd.DataFrame, key: str, by: str, ttl: pd.Timedelta, order: list[str]) -> pd.DataFrame:
    """Independent as-of: per event, the row of ``rows`` with ``rows[by] == event[key]``,
    ``t - ttl <= event_timestamp <= t``, greatest by ``order``; brute force (join + filter)."""
    t = pd.to_datetime(events["event_time"], utc=True)
    left = pd.DataFrame({"row": events["row"].to_numpy(), by: events[key].to_numpy(), "_t": t.to_numpy()})
    pairs = left.merge(rows, on=by)
    pairs = pairs[(pairs["event_timestamp"] <= pairs["_t"]) & (pairs["event_timestamp"] + ttl >= pairs["_t"])]
    best = pairs.sort_values(["row", *order]).groupby("row").tail(1)
    return best.set_index("row")


def _expected(root: Path, events: pd.DataFrame) -> pd.DataFrame:
    weather, devices = load_source(root / "data", "weather"), load_source(root / "data", "devices")
    w = _latest(events, weather, "site", "site_id", pd.Timedelta(hours=3), ["event_timestamp", "created"])
    d = _latest(events, devices, "device", "device_id", pd.Timedelta(days=120), ["event_timestamp"])
    out = pd.DataFrame(index=pd.Index(events["row"], name="row"))
    return out.join(w[list(WEATHER)]).join(d[list(DEVICE)])


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.index) == list(want.index)
    for column in want.columns:
        g, w = got[column], want[column]
        both_null = g.isna() & w.isna()
        if column in ("temperature", "humidity", "capacity", "age_days"):
            equal = np.isclose(g.astype(float), w.astype(float), rtol=0, atol=0)
        else:
            equal = g.astype(object) == w.astype(object)
        bad = ~(equal | both_null)
        assert not bad.any(), f"{column}: {bad.sum()} rows differ, e.g.\n{pd.concat([g[bad], w[bad]], axis=1).head()}"


def test_generation_is_deterministic(tmp_path):
    first, second = generate(tmp_path / "a"), generate(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*.parquet"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.parquet"))
    assert len(files) >= 3 * CONFIG.months + 1
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_generated_data_has_the_awkward_shapes(sites):
    sources = sites / "data" / "sources"
    units = {p.parent.name: pq.read_schema(p).field("event_timestamp").type for p in sources.glob("weather/*/part-0.parquet")}
    assert {str(u) for u in units.values()} == {"timestamp[ns, tz=UTC]", "timestamp[us, tz=UTC]"}
    assert str(pq.read_schema(next(sources.glob("events/*/*.parquet"))).field("event_time").type) == "timestamp[ns]"

    labels = _labels(sites)
    assert set(labels["site"]) == set(CONFIG.sites) and "Zürich HB" in set(labels["site"])
    assert 150 <= labels.groupby([labels["site"], labels["event_time"].dt.month]).size().min()
    assert labels.duplicated(["site", "event_time"]).sum() > 50  # many ties on (cohort, time)
    assert set(labels["level"]) == {"low", "mid", "high"}
    assert labels["demand"].dtype == np.float64 and labels["hour_of_day"].dtype == np.int64

    weather = load_source(sites / "data", "weather")
    assert weather.duplicated(["site_id", "event_timestamp"]).sum() > 20  # corrections
    assert not weather.duplicated(["site_id", "event_timestamp", "created"]).any()  # no arbitrary ties
    devices = load_source(sites / "data", "devices")
    assert not devices.duplicated(["device_id", "event_timestamp"]).any()


def test_spec_validates_for_both_tasks(sites):
    regression, multiclass = sites_spec(sites), sites_spec(sites, task="multiclass")
    assert regression.labels.keys == {"site_id": "site", "device_id": "device"}
    assert (regression.labels.label_column, multiclass.labels.label_column) == ("demand", "level")
    assert regression.task == "regression" and multiclass.task == "multiclass"
    assert regression.cohorts == tuple(sorted(CONFIG.sites))
    assert regression.feature_repo == sites / "feature_repo"
    assert regression.definition_version() != multiclass.definition_version()


def test_feast_repo_applies(sites):
    store = _store(sites)
    assert {fv.name for fv in store.list_feature_views()} == {"site_weather_fv", "device_profile_fv"}
    assert {e.name for e in store.list_entities()} >= {"site", "device"}
    service = store.get_feature_service("sites_model")
    assert {p.name for p in service.feature_view_projections} == {"site_weather_fv", "device_profile_fv"}


def test_historical_features_match_an_independent_as_of(sites):
    labels = _labels(sites)
    got = _feast(sites, labels)
    want = _expected(sites, labels)
    _assert_same(got, want)
    assert want["temperature"].isna().any() and want["temperature"].notna().mean() > 0.95  # TTL gaps


def test_hand_checked_rows(sites):
    """Rows whose weather hour has a correction get the correction (the newest created)."""
    labels = _labels(sites)
    weather = load_source(sites / "data", "weather")
    fixes = weather[weather.duplicated(["site_id", "event_timestamp"], keep=False)]
    newest = fixes.sort_values("created").groupby(["site_id", "event_timestamp"]).tail(1)
    t = pd.to_datetime(labels["event_time"], utc=True)
    on_fixed = labels[pd.MultiIndex.from_arrays([labels["site"], t]).isin(pd.MultiIndex.from_frame(newest[["site_id", "event_timestamp"]]))]
    assert len(on_fixed) >= 3
    got = _feast(sites, on_fixed)
    for row in on_fixed.itertuples():
        fix = newest[(newest["site_id"] == row.site) & (newest["event_timestamp"] == pd.Timestamp(row.event_time, tz="UTC"))].iloc[0]
        assert got.loc[row.row, "temperature"] == fix["temperature"]
        assert got.loc[row.row, "condition"] == fix["condition"]


def test_ttl_and_timestamp_boundaries_are_inclusive(sites):
    """Probe rows at a weather gap and at a device profile change, with label-row keys."""
    site, device = CONFIG.sites[1], CONFIG.devices(CONFIG.sites[1])[0]
    hours = pd.Series(changes.weather_hours(sites / "data", site))
    gap_end = hours[hours.diff() >= 4 * HOUR].iloc[0]
    last = hours[hours < gap_end].iloc[-1]
    profile = load_source(sites / "data", "devices").query("device_id == @device").sort_values("event_timestamp")
    change = profile["event_timestamp"].iloc[2]
    us = pd.Timedelta(microseconds=1)
    probes = [last + 3 * HOUR, last + 3 * HOUR + us, change - us, change]
    entities = pd.DataFrame(
        {"site": site, "device": device, "event_time": [p.tz_convert(None) for p in probes], "row": range(len(probes))}
    )
    got = _feast(sites, entities)
    assert got["temperature"].notna().tolist()[:2] == [True, False]
    assert got["temperature"].iloc[0] == _expected(sites, entities)["temperature"].iloc[0]
    assert got["capacity"].iloc[2] == profile["capacity"].iloc[1]
    assert got["capacity"].iloc[3] == profile["capacity"].iloc[2]
    _assert_same(got, _expected(sites, entities))


def test_edits_show_in_feast(tmp_path):
    """edit_weather, change_device_profile and append_late_events change what Feast returns."""
    root, _ = new_sites_project(tmp_path / "project")
    labels = _labels(root)
    weather = load_source(root / "data", "weather")
    on_hour = pd.MultiIndex.from_arrays([labels["site"], pd.to_datetime(labels["event_time"], utc=True)])
    row = labels[on_hour.isin(pd.MultiIndex.from_frame(weather[["site_id", "event_timestamp"]]))].iloc[10]
    hour, device = pd.Timestamp(row["event_time"], tz="UTC"), int(row["device"])
    changes.edit_weather(root / "data", row["site"], hour.to_pydatetime(), temperature=55.5, condition="hail")
    profile = load_source(root / "data", "devices").query("device_id == @device").sort_values("event_timestamp")
    index = int((profile["event_timestamp"] <= hour).sum()) - 1
    changes.change_device_profile(root / "data", device, index, firmware="v9.9")
    got = _feast(root, labels[labels["row"] == row["row"]])
    assert (got["temperature"].iloc[0], got["condition"].iloc[0], got["firmware"].iloc[0]) == (55.5, "hail", "v9.9")

    path = changes.append_late_events(root / "data", CONFIG, CONFIG.sites[2], 1, n=12)
    assert path.name == "late-1.parquet" and len(_labels(root)) == len(labels) + 12
    late = _labels(root).iloc[len(labels):]
    assert set(late["site"]) == {CONFIG.sites[2]}
    _assert_same(_feast(root, late), _expected(root, late))


def test_project_builds_with_the_repos_own_ttl(tmp_path):
    # no timing asserted here (shared machines): what the build costs is bench/'s to measure
    new_sites_project(tmp_path / "project")
    assert timedelta(hours=3) == _store(tmp_path / "project").get_feature_view("site_weather_fv").ttl
