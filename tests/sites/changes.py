"""Edits tests make to a generated "sites" world: each returns the files it wrote.

Edited files are rewritten atomically with their own schema (timestamp units and zones kept), so
an edit changes values only.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .generate import SitesConfig, _draw_events, _labelled, load_source, month_name, source_dir, write_parquet


def _utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _rewrite(path: Path, frame: pd.DataFrame, schema: pa.Schema) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp)
    tmp.replace(path)
    return path


def _edit_rows(files: list[Path], match: Any, values: dict[str, Any]) -> list[Path]:
    """Set ``values`` on the rows ``match(frame)`` selects, in every file of ``files`` holding some."""
    written = []
    for path in files:
        table = pq.read_table(path)
        frame = table.to_pandas()
        rows = match(frame)
        if rows.any():
            for column, value in values.items():
                frame.loc[rows, column] = value
            written.append(_rewrite(path, frame, table.schema))
    return written


def edit_weather(data_dir: Path, site: str, hour: datetime, **values: Any) -> list[Path]:
    """Change the weather of ``site`` at ``hour`` (every row of that key: base and correction).

    Args:
        data_dir: The project's data folder.
        site: A site id.
        hour: The row's event timestamp (naive means UTC).
        **values: New feature values, e.g. ``temperature=40.0, condition="snow"``.

    Returns:
        The files rewritten.

    Raises:
        KeyError: if no weather row exists there (the hour is in a gap).
    """
    stamp = _utc(hour)
    files = sorted(source_dir(data_dir, "weather", month_name(stamp)).glob("*.parquet"))
    written = _edit_rows(files, lambda f: (f["site_id"] == site) & (f["event_timestamp"] == stamp), values)
    if not written:
        raise KeyError(f"no weather row for {site!r} at {stamp}")
    return written


def weather_hours(data_dir: Path, site: str) -> list[pd.Timestamp]:
    """The hours (UTC) at which ``site`` has weather rows, sorted."""
    weather = load_source(data_dir, "weather")
    return sorted(weather.loc[weather["site_id"] == site, "event_timestamp"].unique())


def append_late_events(
    data_dir: Path, config: SitesConfig, site: str, month_index: int, n: int = 20, batch: int = 1
) -> Path:
    """Write ``n`` new label rows of ``site`` into month ``month_index`` as ``late-<batch>.parquet``.

    Labels are computed from the features on disk now (so after earlier edits). ``batch`` picks
    another random stream: each batch is a different set of rows.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1 (stream 0 is the initial generation)")
    events = _draw_events(config, site, month_index, n, batch)
    labelled = _labelled(events, load_source(data_dir, "weather"), load_source(data_dir, "devices"))
    month = month_name(config.month_start(month_index))
    return write_parquet(labelled, source_dir(data_dir, "events", month) / f"late-{batch}.parquet")


def change_device_profile(data_dir: Path, device_id: int, row: int = 0, **values: Any) -> Path:
    """Change the ``row``-th profile row (in time order) of ``device_id``.

    Args:
        data_dir: The project's data folder.
        device_id: A device id.
        row: Which of the device's rows, oldest first (negative counts from the newest).
        **values: New feature values, e.g. ``firmware="v9.0", capacity=10.0``.

    Returns:
        The file rewritten.
    """
    devices = load_source(data_dir, "devices")
    stamps = sorted(devices.loc[devices["device_id"] == device_id, "event_timestamp"])
    if not stamps:
        raise KeyError(f"no profile rows for device {device_id}")
    stamp = stamps[row]
    files = [source_dir(data_dir, "devices", month_name(stamp)) / "part-0.parquet"]
    written = _edit_rows(files, lambda f: (f["device_id"] == device_id) & (f["event_timestamp"] == stamp), values)
    return written[0]

