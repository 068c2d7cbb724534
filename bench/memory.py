"""Benchmark 5: peak memory of training one partition, as the dataset grows.

Each measurement is a fresh interpreter (``python -m bench.memory --child ...``) that does what the
two partitioned assets do for one key: ``build_training_set`` (Feast retrieval, parquet) then
``train_sub_model`` (CatBoost fit, model store). Its peak RSS is ``ru_maxrss`` from
``getrusage(RUSAGE_CHILDREN)`` in a minimal launcher process whose only child it is (see
``_LAUNCHER``); the child also reports its running peak after imports + Feast store, after
retrieval and after training. Three worlds separate the two growths:

- ~1M activity rows: 4 cohorts x 12 months;
- ~10M rows, same partition: 10x the history (130 months), same customers, so the trained
  partition (newest month, one cohort) has as many rows as in the 1M world;
- ~10M rows, 10x partition: 10x the customers over 12 months, so the partition grows 10x too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from bench.common import Stat, Timer, new_project
from bench.report import BenchResult, Check, Table

NAME = "memory"
MB = 2**20


class World(NamedTuple):
    label: str
    customers: int
    months: int


class Size(NamedTuple):
    worlds: tuple[World, ...]
    reps: int


SIZES = {
    "quick": Size((World("small", 10, 3),), 1),
    "default": Size(
        (World("~1M rows", 630, 12), World("~10M rows, 10x history", 630, 130), World("~10M rows, 10x customers", 6300, 12)),
        2,  # peak RSS varies little between runs; each run is a fresh interpreter (~10 s of imports)
    ),
}
MARKS = ("imports + Feast store", "retrieval", "training")


def child(spec_file: str, window: str, cohort: str) -> None:
    """Materialize one partition (training set, then sub-model); print peak RSS marks as JSON.

    Args:
        spec_file: Path of the spec as JSON (``RetrainingSpec.model_dump_json``).
        window: Window key of the partition.
        cohort: Cohort of the partition.
    """
    import resource
    import warnings

    warnings.simplefilter("ignore")
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # noqa: E731 (Linux: KiB)

    from retrain_plugins.feast_view import load_feature_service_view
    from retrain_plugins.feast_store import feature_store
    from retrain_plugins.layout import model_store
    from retrain_plugins.partitions import PartitionKey
    from retrain_plugins.spec import RetrainingSpec
    from retrain_plugins.training import build_training_set, train_sub_model

    spec = RetrainingSpec.model_validate_json(Path(spec_file).read_text())
    key = PartitionKey(window, cohort)
    view = load_feature_service_view(spec)
    store = feature_store(str(spec.feature_repo))
    store.get_feature_service(spec.feature_service)
    marks = {MARKS[0]: peak()}
    meta = build_training_set(spec, view, store, key)
    marks[MARKS[1]] = peak()
    trained = train_sub_model(spec, view, model_store(spec), key, "manual", None)
    marks[MARKS[2]] = peak()
    print(json.dumps({"marks": marks, "rows": meta["rows"], "status": trained["status"]}))


# The child is started by this small launcher, not by the benchmark process itself: Linux carries
# ru_maxrss across fork/vfork + exec, so a child of the (large) benchmark process would report at
# least the benchmark's own peak. The launcher's only child is the measured process, so its
# getrusage(RUSAGE_CHILDREN).ru_maxrss is exactly that child's peak.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
)


def _measure(spec_file: Path, window: str, cohort: str) -> tuple[int, dict, float]:
    """Run one child through the launcher; return its ru_maxrss in bytes, its report, its wall time."""
    child_command = [sys.executable, "-m", "bench.memory", "--child", str(spec_file), window, cohort]
    with Timer() as t:
        done = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, *child_command],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            check=False,
        )
    lines = done.stdout.strip().splitlines()
    maxrss_kib, code = map(int, lines[-1].split())
    if done.returncode != 0 or code != 0:
        raise RuntimeError(f"memory child failed ({code}):\n{done.stderr[-3000:]}")
    return maxrss_kib * 1024, json.loads(lines[-2]), t.seconds


def run(size: str, workdir: Path, cache: Path, reps: int | None = None) -> BenchResult:
    """Measure peak RSS of training one partition in three worlds; see the module docstring.

    Args:
        size: ``quick`` or ``default``.
        workdir: Empty folder for this benchmark's projects.
        cache: Shared folder of generated worlds.
        reps: Repetitions instead of the size's default.

    Returns:
        One table and the memory target.
    """
    from retrain_plugins.demo.generate import DemoConfig
    from retrain_plugins.partitions import windows

    chosen = SIZES[size]._replace(reps=reps or SIZES[size].reps)
    results = []
    for world in chosen.worlds:
        config = DemoConfig(n_customers=world.customers, months=world.months)
        project = new_project(workdir / f"w{world.customers}x{world.months}", config, cache)
        project.close()
        spec_file = project.root / "spec.json"
        spec_file.write_text(project.spec.model_dump_json())
        window, cohort = windows(project.spec)[-1].key, config.cohorts[0]
        samples = [_measure(spec_file, window, cohort) for _ in range(chosen.reps)]
        days = (config.month_start(world.months) - config.month_start(-1)).days
        results.append(
            {
                "world": world,
                "activity_rows": world.customers * len(config.cohorts) * days,
                "partition_rows": samples[0][1]["rows"],
                "peak": Stat.of(s[0] for s in samples),
                "marks": {m: Stat.of(s[1]["marks"][m] for s in samples) for m in MARKS},
                "seconds": Stat.of(s[2] for s in samples),
            }
        )
    table = Table(
        f"Peak RSS of one partition's training-set retrieval + training in a fresh process (MiB, median (min-max) of {chosen.reps})",
        ["world", "activity rows", "partition rows", *(f"peak through {m}" for m in MARKS), "peak RSS (RUSAGE_CHILDREN)", "above import baseline", "wall"],
    )
    for r in results:
        base = r["marks"][MARKS[0]].median
        table.rows.append(
            [
                r["world"].label,
                f"{r['activity_rows']:,}",
                f"{r['partition_rows']:,}",
                *(r["marks"][m].fmt(unit="", digits=0, scale=1 / MB) for m in MARKS),
                r["peak"].fmt(unit="", digits=0, scale=1 / MB),
                f"{(r['peak'].median - base) / MB:.0f}",
                r["seconds"].fmt(digits=1),
            ]
        )
    table.notes += [
        "The partition is the newest month of the first cohort. 'Peak through X' is the process's running "
        "maximum RSS after that phase (so it never decreases); 'above import baseline' is the peak minus the "
        "mark after imports + Feast store, i.e. what retrieval and training add.",
    ]
    grow = lambda r: r["peak"].median - r["marks"][MARKS[0]].median  # noqa: E731
    if len(results) < 2:  # the quick size measures one world: nothing to compare
        checks = [Check("peak RSS grows with the partition, not the dataset", f"{grow(results[0]) / MB:.0f} MiB working memory", "-", None)]
    else:
        small, history = results[:2]
        factor = grow(history) / max(grow(small), 1)
        bigger = f", {grow(results[2]) / MB:.0f} MiB with a 10x partition" if len(results) > 2 else ""
        checks = [
            Check(
                "peak RSS grows with the partition, not the dataset",
                f"working memory {grow(small) / MB:.0f} MiB -> {grow(history) / MB:.0f} MiB with 10x history ({factor:.2f}x){bigger}",
                "10x history, same partition: <= 1.25x",
                factor <= 1.25,
            )
        ]
    return BenchResult(NAME, "5. Memory", [table], checks)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.memory --child SPEC_JSON WINDOW COHORT (used by python -m bench)")
