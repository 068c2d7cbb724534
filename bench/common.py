"""Shared pieces of the benchmarks: repetition statistics, timing, run breakdowns, projects.

A benchmark module exposes ``run(size, workdir, cache, reps=None) -> BenchResult`` (see
:mod:`bench.report`). It builds its own projects under ``workdir`` with :func:`new_project` (the
pattern of ``tests/conftest.py``: a copy of ``feature_repo/`` next to a fresh ``data/``, seeded
demo data, an in-process ``feast apply``). Nothing here asserts anything about time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import statistics
import time
import warnings
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrain_plugins.demo.project import DEMO_TRAINER, DemoProject

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from retrain_plugins.demo.generate import DemoConfig
    from retrain_plugins.spec import RetrainingSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_REPO = REPO_ROOT / "feature_repo"


# -- statistics ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Stat":
        """Summarize ``values`` (at least one).

        Args:
            values: One measurement per repetition.

        Returns:
            The median, min, max and count.
        """
        data = [float(v) for v in values]
        if not data:
            raise ValueError("Stat.of needs at least one value")
        return cls(statistics.median(data), min(data), max(data), len(data))

    def fmt(self, unit: str = "s", digits: int = 2, scale: float = 1.0) -> str:
        """Render as ``median unit (min-max)``; the range is left out for a single repetition."""
        med, lo, hi = (round(x * scale, digits) for x in (self.median, self.min, self.max))
        head = f"{med:.{digits}f}{' ' + unit if unit else ''}"
        return head if self.n == 1 or lo == hi else f"{head} ({lo:.{digits}f}-{hi:.{digits}f})"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, ``perf_counter``)."""

    def __enter__(self) -> "Timer":
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def pct(x: float | Stat, digits: int = 1) -> str:
    """A ratio (or a :class:`Stat` of ratios) as a percentage string."""
    if isinstance(x, Stat):
        med, lo, hi = (f"{100 * v:.{digits}f}" for v in (x.median, x.min, x.max))
        return f"{med}%" if x.n == 1 or lo == hi else f"{med}% ({lo}-{hi}%)"
    return f"{100 * x:.{digits}f}%"


def times(x: Stat, digits: int = 1) -> str:
    """A :class:`Stat` of ratios as ``2.1x (1.9-2.3)``."""
    med, lo, hi = (f"{v:.{digits}f}" for v in (x.median, x.min, x.max))
    return f"{med}x" if x.n == 1 or lo == hi else f"{med}x ({lo}-{hi})"


# -- Dagster runs ----------------------------------------------------------------------------

FITTED = ("trained", "rejected")  # "rejected": fitted, then held back by the champion/challenger gate


def _value(meta: dict, name: str) -> Any:
    entry = meta.get(name)
    return getattr(entry, "value", entry)


def materialized(results: list, asset: str = "sub_model") -> list[dict[str, Any]]:
    """Metadata (plain values) of every partition materialization of ``asset`` in ``results``."""
    return [
        {name: _value(event.materialization.metadata, name) for name in event.materialization.metadata}
        for result in results
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key.path[-1] == asset
    ]


PARTITIONED = ("train",)  # the step (``<name>__train``) that materializes training_set and sub_model


def breakdown(results: list, wall: float) -> dict[str, Any]:
    """Split the wall time of in-process runs by their steps and per-partition metadata.

    Args:
        results: ``ExecuteInProcessResult`` of each run.
        wall: Measured wall time of all runs together.

    Returns:
        Seconds of run overhead (wall minus steps), Feast retrieval and training (the partitions'
        ``retrieval_seconds`` / ``training_seconds``), the rest of the two partitioned steps, and
        the steps of the other assets; the count of fitted sub-models, of runs, the seconds of
        each other asset's steps, and how the online store was loaded (``online_features``' mode).
    """
    partition_steps = other_steps = 0.0
    others: dict[str, float] = {}
    for result in results:
        for event in result.all_events:
            if event.is_step_success:
                seconds = event.event_specific_data.duration_ms / 1000.0
                asset = str(event.step_key).split("__")[-1]
                if asset in PARTITIONED:
                    partition_steps += seconds
                else:
                    other_steps += seconds
                    others[asset] = others.get(asset, 0.0) + seconds
    retrieval = sum(float(m.get("retrieval_seconds") or 0.0) for m in materialized(results, "training_set"))
    fitted = [m for m in materialized(results, "sub_model") if m.get("status") in FITTED]
    training = sum(float(m.get("training_seconds") or 0.0) for m in fitted)
    return {
        "run overhead": max(wall - partition_steps - other_steps, 0.0),
        "Feast retrieval": retrieval,
        "training": training,
        "rest of the partition steps": max(partition_steps - retrieval - training, 0.0),
        "other assets": other_steps,
        "trained": len(fitted),
        "runs": len(results),
        "other_seconds": others,
        "online_modes": [m.get("mode") for m in materialized(results, "online_features")],
    }


# -- environment -----------------------------------------------------------------------------


def quiet() -> None:
    """Silence the warnings and INFO logs of Feast/Dagster/ibis so the tables stay readable."""
    warnings.simplefilter("ignore")
    # Feast adds its own filters at import ("once" for deprecations), so filters alone do not hold.
    warnings.showwarning = lambda *args, **kwargs: None
    # Sensor contexts log through fresh coloredlogs console loggers that no named-logger level
    # reaches; disabling INFO and below process-wide keeps the tick's summary line off the tables.
    logging.disable(logging.INFO)


# -- projects --------------------------------------------------------------------------------


def month_end(config: "DemoConfig", extra_months: int = 0) -> date:
    """End (exclusive) of the windows covering the config's label months, plus ``extra_months``."""
    return config.month_start(config.months + extra_months)


def make_spec(root: Path, config: "DemoConfig", **overrides: Any) -> "RetrainingSpec":
    """The demo retraining's spec for a project at ``root``, windows covering ``config``."""
    from retrain_plugins.demo.project import demo_spec

    return demo_spec(root, config, **overrides)


def generated_sources(cache: Path, config: "DemoConfig") -> Path:
    """Generate ``config``'s world once per cache folder; return its ``sources`` folder."""
    from retrain_plugins.demo.generate import generate

    key = hashlib.sha256(repr(dataclasses.astuple(config)).encode()).hexdigest()[:12]
    folder = cache / f"world-{key}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        generate(folder, config)
        (folder / ".complete").touch()
    return folder / "sources"


def temp_instance(folder: Path) -> "DagsterInstance":
    """A sqlite-backed Dagster instance in ``folder`` (runs, events, schedules), telemetry off."""
    from dagster import DagsterInstance

    folder.mkdir(parents=True, exist_ok=True)
    return DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}})


def new_project(
    root: Path,
    config: "DemoConfig",
    cache: Path,
    activity_ttl_days: int | None = None,
    **spec_overrides: Any,
) -> DemoProject:
    """Build a project: feature repo copy, generated data, ``feast apply``, definitions, instance.

    Args:
        root: Empty (or missing) project folder.
        config: The world to generate (cached per ``cache`` folder, then copied).
        cache: Folder of generated worlds shared by the benchmarks of one run.
        activity_ttl_days: Change the activity view's TTL in the copied repo.
        **spec_overrides: Passed to :func:`make_spec`.

    Returns:
        The project, with a sqlite-backed Dagster instance under ``root/dagster_home``.
    """
    from retrain_plugins.demo.project import copy_feature_repo, open_project

    root.mkdir(parents=True, exist_ok=True)
    copy_feature_repo(FEATURE_REPO, root, activity_ttl_days)
    shutil.copytree(generated_sources(cache, config), root / "data" / "sources")
    spec = make_spec(root, config, **spec_overrides)
    return open_project(root, spec, temp_instance(root / "dagster_home"))


def touch_all(folder: Path) -> int:
    """Give every parquet file under ``folder`` a new mtime (content unchanged); return the count."""
    stamp = time.time_ns()
    files = sorted(folder.rglob("*.parquet"))
    for i, path in enumerate(files):
        os.utime(path, ns=(stamp + i, stamp + i))
    return len(files)
