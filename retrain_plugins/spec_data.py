"""The data side of a retraining spec: where the label rows are and how time is cut into windows.

Part of :class:`retrain_plugins.spec.RetrainingSpec` (which re-exports these models).
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSource(_Model):
    """Where the labelled rows are: one row per (entities, label time).

    Paths: ``path`` is relative to the spec's ``data_dir`` (absolute paths are kept as they are), or
    an fsspec URL kept as it is (``s3://bucket/labels/*/*.parquet``; see :mod:`retrain_plugins.remote`).
    """

    path: str = Field(
        description=(
            "Parquet glob of the label rows, relative to data_dir, e.g. 'sources/labels/*/*.parquet', "
            "or an fsspec URL, e.g. 's3://bucket/labels/*/*.parquet' (credentials and endpoint from the "
            "environment: AWS_* variables, ~/.aws, fsspec's FSSPEC_S3_* configuration)."
        )
    )
    entity_column: str | None = Field(
        default=None,
        description="For a feature service with one join key: the label column holding it, named as the key.",
    )
    entity_columns: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Feast join key -> label column holding it, one entry per join key the feature service's "
            "views use, e.g. {site_id: site, device_id: device}. Use this or entity_column."
        ),
    )
    timestamp_column: str = Field(
        description="Label time; features are joined as of this time. Naive timestamps are read as UTC."
    )
    label_column: str = Field(description="Target column: 0/1 or boolean (binary), classes (multiclass), numbers (regression).")
    cohort_column: str = Field(description="Column whose value picks the sub-model, e.g. 'region'; may be a join key.")
    feature_columns: tuple[str, ...] = Field(
        default=(),
        description="Columns of the label rows used as features too (request-time context, e.g. 'hour_of_day').",
    )

    @model_validator(mode="after")
    def _keys(self) -> "LabelSource":
        if bool(self.entity_column) == bool(self.entity_columns):
            raise ValueError("labels: give exactly one of entity_column (one join key) or entity_columns (join key -> column)")
        roles = {"timestamp_column": self.timestamp_column, "label_column": self.label_column}
        for column in self.feature_columns:
            for role, used in roles.items():
                if column == used:
                    raise ValueError(f"labels.feature_columns: {column!r} is the {role}")
        if len(set(self.feature_columns)) != len(self.feature_columns):
            raise ValueError(f"labels.feature_columns must be unique, got {list(self.feature_columns)}")
        for column in self.keys.values():
            if column in roles.values():
                raise ValueError(f"labels: entity column {column!r} is also the timestamp or label column")
        return self

    @property
    def keys(self) -> dict[str, str]:
        """Feast join key -> label column, in the order given."""
        return dict(self.entity_columns) if self.entity_columns else {self.entity_column: self.entity_column}

    @property
    def key_columns(self) -> list[str]:
        """The label columns holding join keys (distinct, in order)."""
        return list(dict.fromkeys(self.keys.values()))

    @property
    def columns(self) -> list[str]:
        """Every label-row column a training set carries, each once: keys, time, cohort, label, features."""
        return list(
            dict.fromkeys(
                [*self.key_columns, self.timestamp_column, self.cohort_column, self.label_column, *self.feature_columns]
            )
        )


def _nearest_boundaries(day: date) -> tuple[date, date]:
    """The 1st of ``day``'s month and of the next month."""
    return day.replace(day=1), date(day.year + day.month // 12, day.month % 12 + 1, 1)


class Windows(_Model):
    """The time-window dimension of the partitions.

    Windows follow ``timezone``'s calendar (a monthly window is [local midnight of the 1st, next
    1st)), as Dagster's time-window partitions do. Weekly windows start on ``start``'s weekday
    (``start: 2025-01-01``, a Wednesday: Wednesday-to-Wednesday weeks); monthly windows on the 1st,
    so a monthly ``start`` must be a 1st.
    """

    granularity: Literal["daily", "weekly", "monthly"] = "monthly"
    start: date = Field(description="First window start (inclusive), a boundary of the granularity.")
    end: date | None = Field(default=None, description="End of the last window (exclusive); open if unset.")
    lookback: int = Field(default=1, ge=1, description="Sub-model (w, c) trains on windows w-L+1 .. w.")
    timezone: str = Field(default="UTC", description="IANA time zone of the windows' calendar, e.g. 'Europe/Berlin'.")

    @model_validator(mode="after")
    def _ordered(self) -> "Windows":
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"windows.end ({self.end}) must be after windows.start ({self.start})")
        if self.granularity == "monthly" and self.start.day != 1:
            before, after = _nearest_boundaries(self.start)
            raise ValueError(
                f"windows.start {self.start} is not the start of a monthly window; the nearest are {before} and {after}"
            )
        if self.end is not None and self.granularity == "monthly" and self.end.day != 1:
            before, after = _nearest_boundaries(self.end)
            raise ValueError(f"windows.end {self.end} is not a monthly window boundary; the nearest are {before} and {after}")
        if self.end is not None and self.granularity == "weekly" and (self.end - self.start).days % 7:
            short = (self.end - self.start).days % 7
            before, after = self.end - timedelta(days=short), self.end + timedelta(days=7 - short)
            raise ValueError(
                f"windows.end {self.end} is not a weekly window boundary (weeks start on {self.start:%A}s, "
                f"from {self.start}); the nearest are {before} and {after}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"windows.timezone {self.timezone!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin')") from None
        return self
