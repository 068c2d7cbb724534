"""Feast definitions of the churn demo: entity -> sources -> feature views -> feature service.

Importing this module has no side effects: source paths are computed from this file's location
(Feast resolves relative ``FileSource`` paths against the working directory, and Dagster runs from
anywhere), pointing at ``../data/sources`` beside this repo.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

SOURCES = Path(__file__).resolve().parent.parent / "data" / "sources"

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A shop customer.",
)

customer_activity_source = FileSource(
    name="customer_activity_source",
    path=str(SOURCES / "activity" / "*" / "*.parquet"),
    timestamp_field="event_timestamp",
    description="Daily activity snapshot per customer, one folder per month.",
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path=str(SOURCES / "profile" / "*" / "*.parquet"),
    timestamp_field="event_timestamp",
    description="Monthly profile snapshot per customer, one folder per month.",
)

customer_activity_fv = FeatureView(
    name="customer_activity_fv",
    entities=[customer],
    ttl=timedelta(days=7),
    schema=[
        Field(name="sessions_7d", dtype=Int64),
        Field(name="orders_30d", dtype=Int64),
        Field(name="spend_30d", dtype=Float64),
        Field(name="support_tickets_30d", dtype=Int64),
        Field(name="days_since_last_order", dtype=Int64),
        Field(name="discount_rate", dtype=Float64),
    ],
    source=customer_activity_source,
    online=True,
    tags={"owner": "growth"},
)

customer_profile_fv = FeatureView(
    name="customer_profile_fv",
    entities=[customer],
    ttl=timedelta(days=62),
    schema=[
        Field(name="tenure_days", dtype=Int64),
        Field(name="plan_tier", dtype=Int64),
        Field(name="age", dtype=Int64),
        Field(name="monthly_fee", dtype=Float64),
    ],
    source=customer_profile_source,
    online=True,
    tags={"owner": "growth"},
)

churn_model_v1 = FeatureService(
    name="churn_model_v1",
    features=[customer_activity_fv, customer_profile_fv],
    description="Features of the per-region churn model.",
)
