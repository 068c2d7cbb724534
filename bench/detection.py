"""Benchmark 2: what change detection costs (the sensor tick), next to hashing all the data.

For each generated world (~1M and ~10M activity rows at the default size) a project is set up,
the sensor ticks once to record the sources, then each repetition times one tick after:

- everything changed: every source file gets a new mtime (identical content), so every window is
  re-fingerprinted (the tick cannot know the content is the same without reading it);
- no change;
- one label folder edited (``edit_rows``: 25% of one cohort's labels in one month);
- one activity folder rewritten (``rewrite_identical``: the largest source, reaching two windows);

next to a full-scan hash of the same data: an order-independent MD5 of every row of every source
in DuckDB (what detection would cost without the listing and the window pruning), and SHA-256 of
the file bytes. Then a tick over 1,000 partitions (100 cohorts x 10 months, small data): no change,
everything touched, and a cold tick (empty state store: every partition requested).

Nothing is trained: the sensor's cost does not depend on it (untrained partitions with data are
simply requested; the requests are counted, not executed).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from retrain_plugins.demo.project import DemoProject

from bench.common import Stat, Timer, new_project, pct, touch_all
from bench.report import BenchResult, Check, Table

NAME = "detection"


class Size(NamedTuple):
    worlds: tuple[tuple[int, int], ...]  # (customers per cohort, months)
    reps: int
    wide_customers: int  # per cohort in the 1,000-partition world


SIZES = {
    "quick": Size(((25, 4),), 1, 2),
    "default": Size(((630, 12), (6300, 12)), 3, 10),
}
WIDE_COHORTS, WIDE_MONTHS = 100, 10
CASES = ("no change", "one label folder edited", "one activity folder rewritten", "everything changed (all files touched)")


def _tick(project: DemoProject) -> tuple[float, int]:
    from retrain_plugins.dagster.execution import tick

    with Timer() as t:
        result = tick(project.defs, project.sensor, project.instance)
    return t.seconds, len(result.run_requests)


def full_scan_hash(sources: Path) -> tuple[int, str]:
    """Row count and order-independent MD5 sum of every row of every source under ``sources``.

    Args:
        sources: The ``sources`` folder (one sub-folder per source, ``month=*/*.parquet`` below).

    Returns:
        Total rows and the sums per source, joined.
    """
    from retrain_plugins.sql import connect, parquet

    con = connect()
    rows, digests = 0, []
    for source in sorted(p.name for p in sources.iterdir() if p.is_dir()):
        n, digest = con.execute(
            f"SELECT count(*), CAST(sum(md5_number_lower(CAST(t AS VARCHAR))) AS VARCHAR) FROM {parquet('p')} AS t",
            {"p": str(sources / source / "*" / "*.parquet")},
        ).fetchall()[0]
        rows += n
        digests.append(digest)
    return rows, ":".join(digests)


def bytes_hash(sources: Path) -> str:
    """SHA-256 over the SHA-256 of every parquet file under ``sources``."""
    import hashlib

    from retrain_plugins.store import sha256_file

    return hashlib.sha256("".join(sha256_file(p) for p in sorted(sources.rglob("*.parquet"))).encode()).hexdigest()


def _rows(sources: Path, source: str) -> int:
    from retrain_plugins.sql import connect, parquet

    glob = str(sources / source / "*" / "*.parquet")
    return int(connect().execute(f"SELECT count(*) FROM {parquet('p')}", {"p": glob}).fetchall()[0][0])


def _millions(rows: int) -> str:
    return f"{rows / 1e6:.1f}M" if rows >= 100_000 else f"{rows / 1e3:.0f}k"


def _world(customers: int, months: int, reps: int, workdir: Path, cache: Path) -> dict:
    from retrain_plugins.demo import scenarios
    from retrain_plugins.demo.generate import DemoConfig, month_name

    config = DemoConfig(n_customers=customers, months=months)
    project = new_project(workdir / f"world-{customers}x{months}", config, cache)
    sources = project.data / "sources"
    middle = month_name(config.month_start(months // 2))
    activity = _rows(sources, "activity")
    out: dict = {"label": _millions(activity), "activity_rows": activity, "files": len(list(sources.rglob("*.parquet")))}
    out["total_rows"] = out["activity_rows"] + _rows(sources, "profile") + _rows(sources, "labels")
    samples: dict[str, list[float]] = {c: [] for c in (*CASES, "row hash", "byte hash")}
    requests: dict[str, int] = {}
    try:
        out["first"] = _tick(project)  # records the listing and the cells (not a repetition)
        for _ in range(reps):
            for case, change in (
                (CASES[3], lambda: touch_all(sources)),
                (CASES[0], lambda: None),
                (CASES[1], lambda: scenarios.edit_rows(project.data, middle, config.cohorts[0])),
                (CASES[2], lambda: scenarios.rewrite_identical(project.data, "activity", middle)),
            ):
                change()
                seconds, requests[case] = _tick(project)
                samples[case].append(seconds)
            with Timer() as t:
                full_scan_hash(sources)
            samples["row hash"].append(t.seconds)
            with Timer() as t:
                bytes_hash(sources)
            samples["byte hash"].append(t.seconds)
    finally:
        project.close()
    out["stats"] = {case: Stat.of(values) for case, values in samples.items()}
    out["vs_hash"] = {
        case: Stat.of(a / b for a, b in zip(samples[case], samples["row hash"])) for case in CASES
    }
    out["requests"] = requests
    shutil.rmtree(project.root, ignore_errors=True)
    return out


def _wide(customers: int, reps: int, workdir: Path, cache: Path) -> dict:
    """Ticks over 1,000 partitions: 100 cohorts x 10 monthly windows."""
    from retrain_plugins.demo.generate import DemoConfig

    cohorts = tuple(f"c{i:03d}" for i in range(WIDE_COHORTS))
    config = DemoConfig(n_customers=customers, cohorts=cohorts, months=WIDE_MONTHS)
    project = new_project(workdir / "wide", config, cache)
    state = project.data / "state" / project.spec.name
    samples: dict[str, list[float]] = {"cold": [], "no change": [], "touched": []}
    requests: dict[str, int] = {}
    try:
        for _ in range(reps):
            for path in state.glob("state.sqlite*"):
                path.unlink()
            for case, change in (
                ("cold", lambda: None),
                ("no change", lambda: None),
                ("touched", lambda: touch_all(project.data / "sources")),
            ):
                change()
                seconds, requests[case] = _tick(project)
                samples[case].append(seconds)
    finally:
        project.close()
    return {
        "partitions": WIDE_COHORTS * WIDE_MONTHS,
        "activity_rows": _rows(project.data / "sources", "activity"),
        "stats": {k: Stat.of(v) for k, v in samples.items()},
        "requests": requests,
    }


def run(size: str, workdir: Path, cache: Path, reps: int | None = None) -> BenchResult:
    """Time sensor ticks and full-scan hashes; see the module docstring.

    Args:
        size: ``quick`` or ``default``.
        workdir: Empty folder for this benchmark's projects.
        cache: Shared folder of generated worlds.
        reps: Repetitions instead of the size's default.

    Returns:
        Tables per world and for 1,000 partitions, and the two detection targets.
    """
    chosen = SIZES[size]._replace(reps=reps or SIZES[size].reps)
    worlds = [_world(n, m, chosen.reps, workdir, cache) for n, m in chosen.worlds]
    wide = _wide(chosen.wide_customers, chosen.reps, workdir, cache)
    table = Table(
        f"Sensor tick vs full-scan hash (seconds, median (min-max) of {chosen.reps} repetitions)",
        ["data", "case", "seconds", "share of full-scan row hash", "run requests"],
    )
    for w in worlds:
        data = w["label"]
        for case in CASES:
            table.rows.append([data, f"tick: {case}", w["stats"][case].fmt(digits=3), pct(w["vs_hash"][case]), w["requests"][case]])
        table.rows.append([data, "full-scan row hash (DuckDB MD5 of every row)", w["stats"]["row hash"].fmt(digits=3), "100%", "-"])
        table.rows.append([data, "SHA-256 of every file's bytes", w["stats"]["byte hash"].fmt(digits=3), "-", "-"])
    table.notes += [
        "Data: " + "; ".join(f"{w['label']} = {w['activity_rows']:,} activity rows, {w['total_rows']:,} rows of all sources in {w['files']} files" for w in worlds) + ".",
        "Each world is 4 cohorts x 12 months of the demo generator; 'first tick' (empty state, every "
        "partition requested): " + "; ".join(f"{w['label']} {w['first'][0]:.2f} s" for w in worlds) + " (one run each).",
        "The row hash is the reference of the target: the byte hash is cheaper but says nothing about which "
        "rows, hence which partitions, changed.",
        "Ticks run through `build_sensor_context` + `evaluate_tick` (retrain_plugins.dagster.execution.tick) "
        "on a sqlite-backed `DagsterInstance.local_temp()`.",
    ]
    wide_table = Table(
        f"Tick over {wide['partitions']:,} partitions ({WIDE_COHORTS} cohorts x {WIDE_MONTHS} months, "
        f"{wide['activity_rows']:,} activity rows)",
        ["case", "seconds", "run requests"],
        [
            ["no change", wide["stats"]["no change"].fmt(digits=3), wide["requests"]["no change"]],
            ["everything changed (all files touched, content identical)", wide["stats"]["touched"].fmt(digits=3), wide["requests"]["touched"]],
            [f"cold state: all {wide['partitions']:,} partitions new", wide["stats"]["cold"].fmt(digits=3), wide["requests"]["cold"]],
        ],
        ["Run requests are grouped into (window range x cohort range) rectangles, one run each."],
    )
    big = worlds[-1]
    no_change = big["stats"][CASES[0]]
    one = [big["vs_hash"][CASES[1]], big["vs_hash"][CASES[2]]]
    checks = [
        Check(f"no-change tick at {big['label']} activity rows", f"{no_change.median:.3f} s", "<= 0.2 s", no_change.median <= 0.2),
        Check(
            f"one-folder tick vs full-scan row hash at {big['label']} activity rows",
            f"labels {pct(one[0].median)}, activity {pct(one[1].median)}",
            "<= 10%",
            max(s.median for s in one) <= 0.1,
        ),
        Check(
            f"no-change tick over {wide['partitions']:,} partitions",
            f"{wide['stats']['no change'].median:.3f} s",
            "reported (no target)",
            None,
        ),
    ]
    return BenchResult(NAME, "2. Detection cost", [table, wide_table], checks)
