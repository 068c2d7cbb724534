"""Feast definitions of the "sites" test project: two entities, two views, one feature service.

Unlike the churn demo: two join keys (a STRING ``site_id`` with odd values such as ``"Zürich HB"``
and an INT64 ``device_id``), string features, an hourly view whose source has a created timestamp
and duplicate rows, and a slowly changing view without one.

Importing this module has no side effects: source paths are computed from this file's location
(Feast resolves relative ``FileSource`` paths against the working directory), pointing at
``../data/sources`` beside this repo.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

SOURCES = Path(__file__).resolve().parent.parent / "data" / "sources"

site = Entity(
    name="site",
    join_keys=["site_id"],
    value_type=ValueType.STRING,
    description="A site (station, terminal); its id is free text.",
)

device = Entity(
    name="device",
    join_keys=["device_id"],
    value_type=ValueType.INT64,
    description="A device installed at a site.",
)

site_weather_source = FileSource(
    name="site_weather_source",
    path=str(SOURCES / "weather" / "*" / "*.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Hourly weather per site, one folder per month; corrections repeat a row with a later 'created'.",
)

device_profile_source = FileSource(
    name="device_profile_source",
    path=str(SOURCES / "devices" / "*" / "*.parquet"),
    timestamp_field="event_timestamp",
    description="Device profile, a new row every few weeks, one folder per month.",
)

site_weather_fv = FeatureView(
    name="site_weather_fv",
    entities=[site],
    ttl=timedelta(hours=3),
    schema=[
        Field(name="temperature", dtype=Float64),
        Field(name="humidity", dtype=Float64),
        Field(name="condition", dtype=String),
    ],
    source=site_weather_source,
    online=True,
    tags={"owner": "ops"},
)

device_profile_fv = FeatureView(
    name="device_profile_fv",
    entities=[device],
    ttl=timedelta(days=120),
    schema=[
        Field(name="firmware", dtype=String),
        Field(name="capacity", dtype=Float64),
        Field(name="age_days", dtype=Int64),
    ],
    source=device_profile_source,
    online=True,
    tags={"owner": "ops"},
)

sites_model = FeatureService(
    name="sites_model",
    features=[site_weather_fv, device_profile_fv],
    description="Features of the per-site demand model.",
)
