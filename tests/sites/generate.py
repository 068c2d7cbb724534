"""Seeded generator of the "sites" test world, and the edits tests make to it.

Everything is a pure function of :class:`SitesConfig`: each (source, month, site) draws from its
own random stream seeded by ``(seed, source, month, site)``. Layout under ``<data_dir>/sources``::

    weather/YYYY-MM/part-0.parquet       hourly weather per site (tz-aware UTC; ns in one month, us in the others)
    weather/YYYY-MM/corrections.parquet  a few (site_id, event_timestamp) rows again, with a later 'created'
    devices/YYYY-MM/part-0.parquet       device profiles, a row every ~3 weeks per device (UTC, us)
    events/YYYY-MM/part-0.parquet        label rows (naive ns timestamps, pandas' default)

Weather has gaps of 1-6 hours, so the 3-hour TTL leaves some label rows without weather. No two
weather rows share (site_id, event_timestamp, created): Feast breaks such ties arbitrarily
(FINDINGS.md). Label rows are drawn on the hour or half hour, so many share a time.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("start", "stop", "charge", "idle")
KIND_EFFECT = {"start": 5.0, "stop": -2.0, "charge": 12.0, "idle": -6.0}
CONDITION_FACTOR = {"sun": 1.0, "cloud": 0.9, "rain": 0.7, "snow": 0.5}
LEVEL_EDGES = (21.0, 30.0)  # noisy demand below the first: "low", below the second: "mid", else "high"


@dataclasses.dataclass(frozen=True)
class SitesConfig:
    """Size and shape of the generated world.

    Attributes:
        sites: site ids (free text: they are Feast join keys and cohort names).
        devices_per_site: devices at each site.
        months: label months written (device profiles start up to 3 weeks earlier).
        first_month: first label month, ``YYYY-MM``.
        events_per_month: label rows per site and month.
        correction_rate: share of weather rows repeated with a later ``created``.
        ns_month: index of the month whose weather is written with nanosecond timestamps.
        seed: the seed of everything.
    """

    sites: tuple[str, ...] = ("Zürich HB", "o'hare/T2", "st-1")
    devices_per_site: int = 4
    months: int = 3
    first_month: str = "2025-01"
    events_per_month: int = 240
    correction_rate: float = 0.03
    ns_month: int = 1
    seed: int = 11

    def month_start(self, index: int) -> datetime:
        """First instant (UTC) of label month ``index``."""
        year, month = map(int, self.first_month.split("-"))
        total = year * 12 + (month - 1) + index
        return datetime(total // 12, total % 12 + 1, 1, tzinfo=timezone.utc)

    def devices(self, site: str) -> list[int]:
        """Device ids of ``site``: ``100 * (site position + 1) + k``."""
        position = self.sites.index(site)
        return [100 * (position + 1) + k + 1 for k in range(self.devices_per_site)]


def month_name(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write atomically (temp file + rename) with pandas' defaults (timestamps keep their unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def _weather_month(config: SitesConfig, index: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(base rows, correction rows) of month ``index``, every site."""
    start, end = config.month_start(index), config.month_start(index + 1)
    hours = int((end - start).total_seconds() // 3600)
    unit = "ns" if index == config.ns_month else "us"
    base_parts, fix_parts = [], []
    for position, site in enumerate(config.sites):
        rng = np.random.default_rng([config.seed, 10, index, position])
        keep = np.ones(hours, dtype=bool)
        for gap_start in rng.choice(hours, size=max(1, hours // 150), replace=False):
            keep[gap_start : gap_start + rng.integers(1, 7)] = False
        h = np.arange(hours)[keep]
        stamps = pd.DatetimeIndex(pd.Timestamp(start) + pd.to_timedelta(h, unit="h")).as_unit(unit)
        temperature = np.round(2.0 + 4.0 * position + 6.0 * np.sin((h % 24 - 9) * np.pi / 12) + rng.normal(0, 2.5, h.size), 2)
        humidity = np.round(np.clip(70 - 1.2 * (temperature - 8) + rng.normal(0, 10, h.size), 15, 100), 1)
        wet = rng.random(h.size) < (humidity - 50) / 60
        condition = np.where(wet, np.where(temperature < 0, "snow", "rain"), np.where(humidity > 65, "cloud", "sun"))
        base = pd.DataFrame(
            {
                "site_id": site,
                "event_timestamp": stamps,
                "created": (stamps + pd.Timedelta(minutes=5)).as_unit(unit),
                "temperature": temperature,
                "humidity": humidity,
                "condition": condition,
            }
        )
        fixed = base[rng.random(h.size) < config.correction_rate].copy()
        later = pd.to_timedelta(rng.integers(60, 240, len(fixed)), unit="min")
        fixed["created"] = pd.DatetimeIndex(fixed["event_timestamp"] + later).as_unit(unit)
        fixed["temperature"] = np.round(fixed["temperature"] + rng.normal(0, 3, len(fixed)), 2)
        fixed["humidity"] = np.round(np.clip(fixed["humidity"] + rng.normal(0, 8, len(fixed)), 15, 100), 1)
        fixed["condition"] = rng.choice(list(CONDITION_FACTOR), len(fixed))
        base_parts.append(base)
        fix_parts.append(fixed)
    return pd.concat(base_parts, ignore_index=True), pd.concat(fix_parts, ignore_index=True)


def _device_rows(config: SitesConfig) -> pd.DataFrame:
    """Every device's profile history: a row every 18-24 days from before the first month."""
    first, end = config.month_start(0), config.month_start(config.months)
    rows = []
    for position, site in enumerate(config.sites):
        for device in config.devices(site):
            rng = np.random.default_rng([config.seed, 20, position, device])
            moment = first - timedelta(days=int(rng.integers(1, 20)), hours=int(rng.integers(0, 24)))
            installed = moment - timedelta(days=int(rng.integers(30, 900)))
            capacity, major, minor = float(rng.integers(60, 160)), 1, 0
            while moment < end:
                rows.append((device, moment, f"v{major}.{minor}", round(capacity, 1), (moment - installed).days))
                moment += timedelta(days=int(rng.integers(18, 25)), hours=int(rng.integers(0, 24)))
                capacity -= float(rng.uniform(0.0, 4.0))
                if rng.random() < 0.3:
                    major, minor = (major + 1, 0) if rng.random() < 0.3 else (major, minor + 1)
    frame = pd.DataFrame(rows, columns=["device_id", "event_timestamp", "firmware", "capacity", "age_days"])
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    return frame.astype({"device_id": "int64", "age_days": "int64"})


def _utc_us(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    return frame


def load_source(data_dir: Path, source: str) -> pd.DataFrame:
    """Every file of ``source`` ("weather", "devices" or "events"), timestamps as UTC microseconds."""
    files = sorted((Path(data_dir) / "sources" / source).glob("*/*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    columns = {"weather": ("event_timestamp", "created"), "devices": ("event_timestamp",), "events": ("event_time",)}
    return _utc_us(frame, columns[source])


def _draw_events(config: SitesConfig, site: str, index: int, n: int, stream: int) -> pd.DataFrame:
    """``n`` label rows of one site in month ``index`` (no label yet), from random stream ``stream``."""
    start, end = config.month_start(index), config.month_start(index + 1)
    rng = np.random.default_rng([config.seed, 30, index, config.sites.index(site), stream])
    day = rng.integers(0, (end - start).days, n)
    hour = rng.integers(0, 24, n)
    minute = rng.choice([0, 0, 0, 30], n)
    stamps = pd.Timestamp(start.replace(tzinfo=None)) + pd.to_timedelta(day * 1440 + hour * 60 + minute, unit="min")
    frame = pd.DataFrame(
        {
            "site": site,
            "device": rng.choice(config.devices(site), n).astype("int64"),
            "event_time": pd.DatetimeIndex(stamps).as_unit("ns"),  # naive, ns: pandas' default
            "hour_of_day": hour.astype("int64"),
            "event_kind": rng.choice(KINDS, n),
            "noise": rng.normal(0.0, 1.5, n),
            "level_noise": rng.normal(0.0, 2.0, n),
        }
    )
    return frame.sort_values(["event_time", "device", "event_kind"], kind="stable", ignore_index=True)


def _as_of(events: pd.DataFrame, weather: pd.DataFrame, devices: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of ``events`` (Feast's rules: latest row <= t within TTL, newest created)."""
    out = events.assign(_t=pd.to_datetime(events["event_time"], utc=True).astype("datetime64[us, UTC]"), _row=range(len(events)))
    latest = weather.sort_values(["event_timestamp", "created"]).drop_duplicates(["site_id", "event_timestamp"], keep="last")
    out = pd.merge_asof(
        out.sort_values("_t"), latest.drop(columns="created").sort_values("event_timestamp"),
        left_on="_t", right_on="event_timestamp", left_by="site", right_by="site_id",
        tolerance=pd.Timedelta(hours=3),
    ).drop(columns=["site_id", "event_timestamp"])
    out = pd.merge_asof(
        out.sort_values("_t"), devices.sort_values("event_timestamp"),
        left_on="_t", right_on="event_timestamp", left_by="device", right_by="device_id",
        tolerance=pd.Timedelta(days=120),
    ).drop(columns=["device_id", "event_timestamp"])
    return out.sort_values("_row").drop(columns=["_t", "_row"]).reset_index(drop=True)


def _labelled(events: pd.DataFrame, weather: pd.DataFrame, devices: pd.DataFrame) -> pd.DataFrame:
    """Add ``demand`` (regression) and ``level`` (multiclass) computed from as-of features."""
    f = _as_of(events, weather, devices)
    temperature = f["temperature"].fillna(12.0)
    factor = f["condition"].map(CONDITION_FACTOR).fillna(0.8).astype(float)
    major = f["firmware"].str.extract(r"v(\d+)", expand=False).astype(float).fillna(1.0)
    demand = (
        (10.0 + 0.15 * f["capacity"].fillna(100.0)) * factor
        + 0.6 * (temperature - 18.0).abs()
        + 4.0 * np.sin(np.pi * f["hour_of_day"] / 12.0)
        + f["event_kind"].map(KIND_EFFECT).astype(float)
        - 0.01 * f["age_days"].fillna(300).astype(float)
        + 3.0 * (major - 1.0)
        + f["noise"]
    ).round(3)
    noisy = demand + f["level_noise"]
    level = np.where(noisy < LEVEL_EDGES[0], "low", np.where(noisy < LEVEL_EDGES[1], "mid", "high"))
    return events.drop(columns=["noise", "level_noise"]).assign(demand=demand.to_numpy(), level=level)


def source_dir(data_dir: Path, source: str, month: str) -> Path:
    return Path(data_dir) / "sources" / source / month


def generate(data_dir: Path, config: SitesConfig = SitesConfig()) -> Path:
    """Write the whole world under ``data_dir/sources`` and return that folder."""
    for index in range(config.months):
        base, fixes = _weather_month(config, index)
        month = month_name(config.month_start(index))
        write_parquet(base, source_dir(data_dir, "weather", month) / "part-0.parquet")
        write_parquet(fixes, source_dir(data_dir, "weather", month) / "corrections.parquet")
    devices = _device_rows(config)
    for month, group in devices.groupby(devices["event_timestamp"].dt.strftime("%Y-%m"), sort=True):
        write_parquet(group.reset_index(drop=True), source_dir(data_dir, "devices", month) / "part-0.parquet")
    weather, devices = load_source(data_dir, "weather"), load_source(data_dir, "devices")
    for index in range(config.months):
        events = pd.concat(
            [_draw_events(config, site, index, config.events_per_month, 0) for site in config.sites], ignore_index=True
        )
        month = month_name(config.month_start(index))
        write_parquet(_labelled(events, weather, devices), source_dir(data_dir, "events", month) / "part-0.parquet")
    return Path(data_dir) / "sources"
