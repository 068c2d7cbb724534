"""Seeded generator of the demo e-commerce churn dataset.

The world is a pure function of :class:`DemoConfig`: every month's rows come from a random stream
seeded by ``(seed, month_index)``, so writing month 13 later (the ``append_month`` scenario) yields
exactly the rows a 13-month generation would have written. Layout under ``<data_dir>/sources``::

    activity/month=YYYY-MM/part-0.parquet   daily snapshot per customer (feature view)
    profile/month=YYYY-MM/part-0.parquet    monthly profile snapshot per customer (feature view)
    labels/month=YYYY-MM/part-0.parquet     label rows: churned within the next 30 days

Timestamps are written in microseconds (Feast over DuckDB is several times slower on ns).
The churn relation differs by region, so per-cohort sub-models beat one global model.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

SOURCES = ("activity", "profile", "labels")
ACTIVITY_FEATURES = (
    "sessions_7d",
    "orders_30d",
    "spend_30d",
    "support_tickets_30d",
    "days_since_last_order",
    "discount_rate",
)
PROFILE_FEATURES = ("tenure_days", "plan_tier", "age", "monthly_fee")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Size and shape of the generated world.

    Attributes:
        n_customers: customers per cohort.
        cohorts: cohort (region) names; the first four have distinct churn drivers.
        months: label months written initially (features start one month earlier).
        first_label_month: first label month, ``YYYY-MM``.
        label_rate: share of customers that get a label date in a given month.
        seed: the seed of everything.
    """

    n_customers: int = 400
    cohorts: tuple[str, ...] = ("north", "south", "east", "west")
    months: int = 12
    first_label_month: str = "2025-01"
    label_rate: float = 0.6
    seed: int = 7

    def month_start(self, index: int) -> date:
        """First day of label month ``index`` (index -1 is the feature warm-up month)."""
        year, month = map(int, self.first_label_month.split("-"))
        total = year * 12 + (month - 1) + index
        return date(total // 12, total % 12 + 1, 1)


def month_name(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


# Churn drivers per cohort: weights on standardized features. Cohorts beyond these four reuse
# them in rotation with flipped signs, so a "new cohort" behaves unlike any existing one.
_DRIVERS = {
    0: {"sessions_7d": -1.6, "tenure_days": -0.6},
    1: {"support_tickets_30d": 1.8, "monthly_fee": 0.5},
    2: {"discount_rate": -1.4, "spend_30d": -0.9},
    3: {"days_since_last_order": 1.7, "plan_tier": -0.7},
}


def _drivers(cohort_index: int) -> dict[str, float]:
    base = _DRIVERS[cohort_index % 4]
    sign = -1.0 if (cohort_index // 4) % 2 else 1.0
    return {name: sign * weight for name, weight in base.items()}


def customers(config: DemoConfig) -> pl.DataFrame:
    """Static customer attributes; ids are stable per (cohort position, customer number)."""
    frames = []
    for ci, cohort in enumerate(config.cohorts):
        rng = np.random.default_rng([config.seed, 1_000 + ci])
        n = config.n_customers
        frames.append(
            pl.DataFrame(
                {
                    "customer_id": np.arange(n, dtype=np.int64) + ci * 1_000_000 + 1,
                    "region": [cohort] * n,
                    "cohort_index": np.full(n, ci, dtype=np.int64),
                    "signup_days_before": rng.integers(30, 1500, n),
                    "plan_tier": rng.integers(0, 3, n),
                    "age": rng.integers(18, 80, n),
                    "engagement": rng.normal(0.0, 1.0, n),
                }
            )
        )
    return pl.concat(frames)


def _month_activity(config: DemoConfig, people: pl.DataFrame, index: int, drift: float) -> pl.DataFrame:
    """Daily snapshots of one month; ``drift`` shifts engagement (used by the drift scenario)."""
    start = config.month_start(index)
    end = config.month_start(index + 1)
    days = (end - start).days
    n = people.height
    rng = np.random.default_rng([config.seed, 2_000 + index + 1, int(people["cohort_index"][0])])
    engagement = people["engagement"].to_numpy()[:, None] + drift
    wiggle = rng.normal(0.0, 0.35, (n, days)).cumsum(axis=1) / np.sqrt(np.arange(1, days + 1))
    level = engagement + wiggle
    sessions = rng.poisson(np.exp(1.4 + 0.5 * level).clip(0.1, 40.0))
    orders = rng.poisson(np.exp(0.6 + 0.4 * level).clip(0.05, 20.0))
    tickets = rng.poisson(np.exp(-0.8 - 0.5 * level).clip(0.01, 10.0))
    spend = np.round(orders * rng.gamma(2.0, 25.0, (n, days)), 2)
    since = rng.integers(0, 45, (n, days)) // (1 + orders)
    discount = np.round(rng.beta(2.0, 5.0, (n, days)) * (1.0 + 0.2 * np.tanh(-level)), 4)
    stamps = np.datetime64(start.isoformat(), "us") + np.arange(days) * np.timedelta64(1, "D")
    return pl.DataFrame(
        {
            "customer_id": np.repeat(people["customer_id"].to_numpy(), days),
            "event_timestamp": np.tile(stamps, n),
            "sessions_7d": sessions.ravel().astype(np.int64),
            "orders_30d": orders.ravel().astype(np.int64),
            "spend_30d": spend.ravel(),
            "support_tickets_30d": tickets.ravel().astype(np.int64),
            "days_since_last_order": since.ravel().astype(np.int64),
            "discount_rate": discount.ravel(),
        }
    ).with_columns(pl.col("event_timestamp").dt.replace_time_zone("UTC"))


def _month_profile(config: DemoConfig, people: pl.DataFrame, index: int) -> pl.DataFrame:
    start = config.month_start(index)
    stamp = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    first = config.month_start(-1)
    return people.select(
        "customer_id",
        pl.lit(stamp).dt.cast_time_unit("us").alias("event_timestamp"),
        (pl.col("signup_days_before") + (start - first).days).alias("tenure_days"),
        pl.col("plan_tier"),
        pl.col("age"),
        (9.99 + 10.0 * pl.col("plan_tier")).alias("monthly_fee"),
    )


def _month_labels(
    config: DemoConfig,
    people: pl.DataFrame,
    activity: pl.DataFrame,
    profile: pl.DataFrame,
    index: int,
    inverted: bool = False,
    label_seed: int = 0,
) -> pl.DataFrame:
    """Label rows of one month: churn odds follow each cohort's own drivers."""
    start = config.month_start(index)
    days = (config.month_start(index + 1) - start).days
    rng = np.random.default_rng([config.seed, 3_000 + index + 1, int(people["cohort_index"][0]), label_seed])
    chosen = rng.random(people.height) < config.label_rate
    day = rng.integers(0, days, people.height)
    hour = rng.integers(6, 22, people.height)
    base = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    stamps = [base + timedelta(days=int(d), hours=int(h)) for d, h in zip(day, hour)]
    frame = (
        people.select("customer_id", "region", "cohort_index")
        .with_columns(
            pl.Series("label_timestamp", stamps).dt.cast_time_unit("us"),
            pl.Series("snapshot", [base + timedelta(days=int(d)) for d in day]).dt.cast_time_unit("us"),
            pl.Series("u", rng.random(people.height)),
        )
        .filter(pl.Series(chosen))
        .join(activity.rename({"event_timestamp": "snapshot"}), on=["customer_id", "snapshot"], how="left")
        .join(profile.drop("event_timestamp"), on="customer_id", how="left")
    )
    score = pl.lit(-1.2)
    for ci in frame["cohort_index"].unique().to_list():
        for feature, weight in _drivers(ci).items():
            weight = -weight if inverted else weight
            column = pl.col(feature)
            z = (column - column.mean()) / (column.std() + 1e-9)
            score = score + pl.when(pl.col("cohort_index") == ci).then(weight * z).otherwise(0.0)
    prob = 1.0 / (1.0 + (-score).exp())
    churned = (pl.col("u") < prob).cast(pl.Int64)
    return frame.select(
        "customer_id", "label_timestamp", "region", churned.alias("churned")
    ).sort("label_timestamp", "customer_id")


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """Write atomically (temp file + rename) with microsecond timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(path)
    return path


def source_dir(data_dir: Path, source: str, month: str) -> Path:
    return Path(data_dir) / "sources" / source / f"month={month}"


def write_month(
    config: DemoConfig,
    data_dir: Path,
    index: int,
    *,
    only: tuple[str, ...] | None = None,
    drift: dict[str, float] | None = None,
    part: str = "part-0",
    label_seed: int = 0,
) -> None:
    """Write all three sources of month ``index`` (labels only for ``index >= 0``).

    ``only`` restricts the cohorts written (ids stay those of the full ``config.cohorts``);
    ``drift`` shifts a cohort's engagement and inverts its churn drivers; ``label_seed`` picks
    another set of label times (late rows).
    """
    people = customers(config)
    if only is not None:
        people = people.filter(pl.col("region").is_in(list(only)))
    activity_parts, profile_parts, label_parts = [], [], []
    for (cohort,), group in people.group_by("region", maintain_order=True):
        shift = (drift or {}).get(cohort, 0.0)
        act = _month_activity(config, group, index, shift)
        prof = _month_profile(config, group, index)
        activity_parts.append(act)
        profile_parts.append(prof)
        if index >= 0:
            label_parts.append(_month_labels(config, group, act, prof, index, inverted=bool(shift), label_seed=label_seed))
    month = month_name(config.month_start(index))
    write_parquet(pl.concat(activity_parts).sort("event_timestamp", "customer_id"), source_dir(data_dir, "activity", month) / f"{part}.parquet")
    write_parquet(pl.concat(profile_parts).sort("customer_id"), source_dir(data_dir, "profile", month) / f"{part}.parquet")
    if label_parts:
        write_parquet(pl.concat(label_parts).sort("label_timestamp", "customer_id"), source_dir(data_dir, "labels", month) / f"{part}.parquet")


def generate(data_dir: Path, config: DemoConfig = DemoConfig()) -> Path:
    """Generate the whole demo world under ``data_dir/sources`` and return that folder."""
    for index in range(-1, config.months):
        write_month(config, data_dir, index)
    return Path(data_dir) / "sources"
