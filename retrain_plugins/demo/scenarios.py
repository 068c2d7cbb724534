"""Ways the demo data changes, as real data does. Each returns the files it wrote.

All are deterministic: the same call on the same data writes the same bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from retrain_plugins.demo.generate import DemoConfig, month_name, source_dir, write_month, write_parquet


def _label_months(data_dir: Path) -> list[str]:
    folders = (Path(data_dir) / "sources" / "labels").glob("month=*")
    return sorted(f.name.split("=", 1)[1] for f in folders)


def _month_index(config: DemoConfig, month: str) -> int:
    year, mon = map(int, month.split("-"))
    first_year, first_mon = map(int, config.first_label_month.split("-"))
    return (year - first_year) * 12 + (mon - first_mon)


def _files(data_dir: Path, source: str, month: str) -> list[Path]:
    return sorted(source_dir(data_dir, source, month).glob("*.parquet"))


def append_month(config: DemoConfig, data_dir: Path) -> str:
    """Write the month after the newest label month (all sources); return its name."""
    index = _month_index(config, _label_months(data_dir)[-1]) + 1
    write_month(config, data_dir, index)
    return month_name(config.month_start(index))


def late_rows(
    config: DemoConfig,
    data_dir: Path,
    month: str,
    cohorts: tuple[str, ...] | None = None,
    batch: int = 1,
    fraction: float = 0.25,
) -> Path:
    """Add a late-arriving file of extra label rows to an old ``month`` (labels only).

    The rows are a fresh draw of the month's labels (seed ``batch``) for ``cohorts``, ``fraction``
    of its size. At 0.25 the champion/challenger gate usually keeps the current model (a draw's
    rows repeat customers and features the current model trained on); a draw as large as the
    month itself (``fraction=1.0``) gives a candidate the gate promotes.
    """
    index = _month_index(config, month)
    scratch = Path(data_dir) / ".late_scratch"
    write_month(config, scratch, index, only=cohorts, label_seed=batch)
    target = source_dir(data_dir, "labels", month) / f"part-late-{batch}.parquet"
    frame = pl.read_parquet(source_dir(scratch, "labels", month) / "part-0.parquet")
    write_parquet(frame.head(max(1, int(frame.height * fraction))), target)
    for path in sorted(scratch.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    scratch.rmdir()
    return target


def edit_rows(data_dir: Path, month: str, cohort: str, fraction: float = 0.25, seed: int = 0) -> list[Path]:
    """Flip the label of a ``fraction`` of ``cohort``'s rows in ``month`` (rewrites its label files)."""
    written = []
    for path in _files(data_dir, "labels", month):
        frame = pl.read_parquet(path)
        rng = np.random.default_rng([seed, len(written)])
        flip = (frame["region"] == cohort).to_numpy() & (rng.random(frame.height) < fraction)
        if not flip.any():
            continue
        churned = frame["churned"].to_numpy().copy()
        churned[flip] = 1 - churned[flip]
        write_parquet(frame.with_columns(pl.Series("churned", churned)), path)
        written.append(path)
    return written


def rewrite_identical(data_dir: Path, source: str, month: str) -> list[Path]:
    """Read and write back every file of ``source``/``month``: new mtime, same rows."""
    written = []
    for path in _files(data_dir, source, month):
        write_parquet(pl.read_parquet(path), path)
        written.append(path)
    return written


def drift(config: DemoConfig, data_dir: Path, cohort: str, month: str, shift: float = 1.5) -> None:
    """Rewrite ``month`` with ``cohort``'s engagement shifted and its churn drivers inverted."""
    write_month(config, data_dir, _month_index(config, month), drift={cohort: shift})


def new_cohort(config: DemoConfig, data_dir: Path, cohort: str, months: int = 2) -> DemoConfig:
    """Add customers of a brand-new ``cohort`` in the newest ``months`` label months.

    Returns the config that includes the new cohort (its ids follow the existing cohorts').
    """
    grown = dataclasses.replace(config, cohorts=(*config.cohorts, cohort))
    for month in _label_months(data_dir)[-months:]:
        write_month(grown, data_dir, _month_index(config, month), only=(cohort,), part=f"part-{cohort}")
    return grown
