"""Benchmark 6: model store bookkeeping over a backfill, old one-manifest layout vs per-partition records.

A backfill puts one synthetic artifact (random bytes, ~100 KB: a small CatBoost model's size) per
partition, 3,600 partitions (36 windows x 100 cohorts) at the default size, through the library's
:class:`~retrain_plugins.store.ModelStore`, with entry metadata shaped like a trained partition's
(~1.5 KB of metrics and columns). No CatBoost: what is measured is the store, not the fit.

- **new layout** (the library): the bookkeeping of each put is its record update (read the
  partition's record, write it to a temp file, fsync, rename, under the partition's record lock),
  timed by an instrumented subclass around ``_updating``; the whole put (artifact write, fsync,
  hash, rename, record) is reported beside it. Figures are the median of the puts just before the
  store reaches 100, 1,000 and 3,600 partitions.
- **old layout (reimplemented here, labelled as such)**: what the one-manifest code did per put:
  read and parse ``manifest.json`` of N partitions (current + one history entry each, ~3.2 KB per
  partition, as measured at 11.7 MB for 3,600), add an entry, rewrite it whole to a temp file,
  fsync, rename. Run at N = 100, 1,000, 3,600 on a manifest of that size (not over the whole
  backfill: that is quadratic).
- at 3,600 partitions: ``ModelStore.entries()`` (what ``retrain status`` reads) and
  ``verify_store`` (hashes every artifact), next to parsing the old 3,600-partition manifest.

Targets (the issue): bookkeeping per put <= 5% of the training time, taken as the CatBoost fit floor
of ~0.9 s per small partition measured in PITFALLS.md (so <= 45 ms); ``entries()`` and verify
<= 2 s at 3,600 partitions.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench.common import Stat, Timer
from bench.report import BenchResult, Check, Table

NAME = "store"
FIT_FLOOR_SECONDS = 0.9  # CatBoost fit of one small partition (PITFALLS.md)
ARTIFACT_BYTES = 100_000
WINDOW_SAMPLE = 50  # puts before each checkpoint whose median is reported


class Size(NamedTuple):
    cohorts: int
    windows: int
    checkpoints: tuple[int, ...]
    reps: int


SIZES = {
    "quick": Size(10, 6, (20, 60), 1),
    "default": Size(100, 36, (100, 1000, 3600), 3),
}


def _metadata(i: int) -> dict[str, Any]:
    """Entry metadata shaped like a trained partition's (~1.5 KB as JSON)."""
    return {
        "fingerprint": f"{i:032x}", "rows": 600 + i % 97, "definition": f"{i * 7919:016x}", "run_id": f"{i:08x}-run",
        "reason": "new", "trainer": "catboost", "task": "binary", "training_seconds": 0.9, "retrieval_seconds": 0.2,
        "feature_columns": [f"feature_{n:02d}" for n in range(24)], "categorical_features": ["plan", "channel"],
        "auc": 0.71, "logloss": 0.52, "brier": 0.18, "holdout_rows": 120, "positives": 61, "classes": None,
        "trainer_params": {"iterations": 200, "depth": 6, "learning_rate": 0.08, "random_seed": 0},
        "feature_service": "churn_features", "feature_service_version": "3", "detail": "backfill " * 20,
    }


class _TimedStore:
    """Factory of a :class:`ModelStore` subclass that records the time of each record update."""

    @staticmethod
    def make(root: Path):
        from retrain_plugins.store import ModelStore

        class TimedStore(ModelStore):
            bookkeeping: list[float] = []

            def _update(self, key, change):  # type: ignore[override]
                started = time.perf_counter()
                try:
                    return super()._update(key, change)
                finally:
                    self.bookkeeping.append(time.perf_counter() - started)

        return TimedStore(root)


def _old_layout_put(path: Path, key: str, entry: dict[str, Any]) -> float:
    """OLD LAYOUT, reimplemented for this benchmark: one put's manifest update; return its seconds."""
    from retrain_plugins.store import atomic_write_text

    with Timer() as t:
        manifest = json.loads(path.read_text())
        slot = manifest["partitions"].setdefault(key, {"current": None, "history": []})
        if slot["current"]:
            slot["history"].append(slot["current"])
        slot["current"] = entry
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    return t.seconds


def _old_manifest(n: int, entry: dict[str, Any]) -> dict[str, Any]:
    """A one-file manifest of ``n`` partitions, current + one history entry each."""
    return {"version": 1, "partitions": {json.dumps([f"w{i // 100:03d}", f"c{i % 100:03d}"]): {
        "current": {**entry, "window": f"w{i // 100:03d}", "cohort": f"c{i % 100:03d}"},
        "history": [{**entry, "window": f"w{i // 100:03d}", "cohort": f"c{i % 100:03d}"}],
    } for i in range(n)}}


def run(size: str, workdir: Path, cache: Path, reps: int | None = None) -> BenchResult:
    """Backfill a store and time its bookkeeping, old layout vs new; see the module docstring.

    Args:
        size: ``quick`` or ``default``.
        workdir: Empty folder for this benchmark's stores.
        cache: Unused (no generated world).
        reps: Repetitions of the old-layout puts and of the reads instead of the size's default.

    Returns:
        The per-put table, the reads table and the three targets.
    """
    from retrain_plugins.partitions import PartitionKey
    from retrain_plugins.verify import verify_store

    chosen = SIZES[size]._replace(reps=reps or SIZES[size].reps)
    workdir.mkdir(parents=True, exist_ok=True)
    store = _TimedStore.make(workdir / "new")
    keys = [PartitionKey(f"2023-{w:03d}", f"cohort_{c:03d}") for w in range(chosen.windows) for c in range(chosen.cohorts)]
    whole: list[float] = []
    for i, key in enumerate(keys):
        payload = os.urandom(ARTIFACT_BYTES)
        with Timer() as t:
            store.put(key, lambda p, b=payload: p.write_bytes(b), ".cbm", _metadata(i))
        whole.append(t.seconds)
    bookkeeping = store.bookkeeping
    sample = {**store.entries()[keys[0]]}
    old_path = workdir / "old" / "manifest.json"
    old_path.parent.mkdir(parents=True, exist_ok=True)
    table = Table(
        "Bookkeeping per put during a backfill (ms, median): old one-manifest layout (reimplemented here) vs per-partition records",
        ["partitions in the store", "old layout: manifest size", "old layout: rewrite + fsync per put",
         "new layout: record update per put", "new layout: whole put (100 KB artifact + record)", "speed-up"],
    )
    per_put = {}
    for n in chosen.checkpoints:
        manifest = _old_manifest(n, sample)
        old_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        mb = old_path.stat().st_size / 2**20
        old = Stat.of(_old_layout_put(old_path, json.dumps([f"new{r}", "x"]), sample) for r in range(chosen.reps))
        lo = max(n - WINDOW_SAMPLE, 0)
        new, put = statistics.median(bookkeeping[lo:n]), statistics.median(whole[lo:n])
        per_put[n] = (old.median, new)
        table.rows.append([f"{n:,}", f"{mb:.1f} MB", old.fmt("ms", 1, 1000), f"{new * 1000:.2f} ms", f"{put * 1000:.1f} ms",
                           f"{old.median / new:.0f}x"])
    table.notes += [
        f"New layout: median of the {WINDOW_SAMPLE} puts before the store reached that many partitions, in one backfill of "
        f"{len(keys):,} through ModelStore.put. Old layout: {chosen.reps} put(s) on a manifest of that many partitions "
        "(read + parse + rewrite whole + fsync + rename), the code path this branch removed, reimplemented in bench/store.py.",
        f"Target: bookkeeping <= 5% of a {FIT_FLOOR_SECONDS} s CatBoost fit (PITFALLS.md) = {FIT_FLOOR_SECONDS * 50:.0f} ms per put.",
    ]
    n = len(keys)
    entries = Stat.of(_timed(store.entries) for _ in range(chosen.reps))
    verify = Stat.of(_timed(lambda: verify_store(store)) for _ in range(chosen.reps))
    report = verify_store(store)
    failures = [] if report.ok and report.checked == n and not report.orphans else [f"verify_store after the backfill: {report}"]
    old_path.write_text(json.dumps(_old_manifest(n, sample), indent=1, sort_keys=True))
    old_read = Stat.of(_timed(lambda: json.loads(old_path.read_text())) for _ in range(chosen.reps))
    reads = Table(
        f"Reading the store at {n:,} partitions (s, median (min-max) of {chosen.reps})",
        ["operation", "seconds"],
        [["ModelStore.entries() (retrain status)", entries.fmt(digits=3)],
         [f"verify_store (hashes {n:,} x 100 KB artifacts)", verify.fmt(digits=3)],
         ["old layout: parse manifest.json (reimplemented here)", old_read.fmt(digits=3)]],
    )
    top = max(chosen.checkpoints)
    budget = FIT_FLOOR_SECONDS * 0.05
    checks = [
        Check(f"store bookkeeping per put at {top:,} partitions", f"{per_put[top][1] * 1000:.2f} ms "
              f"({per_put[top][1] / FIT_FLOOR_SECONDS:.2%} of a 0.9 s fit; old layout {per_put[top][0] * 1000:.0f} ms)",
              "<= 5% of training time (45 ms)", per_put[top][1] <= budget),
        Check(f"ModelStore.entries() at {n:,} partitions", entries.fmt(digits=3), "<= 2 s", entries.median <= 2.0),
        Check(f"verify_store at {n:,} partitions", verify.fmt(digits=3), "<= 2 s", verify.median <= 2.0),
    ]
    return BenchResult(NAME, "6. Model store", [table, reads], checks, failures=failures)


def _timed(fn) -> float:
    with Timer() as t:
        fn()
    return t.seconds
