"""Benchmark 4: model quality of per-cohort sub-models, and of partial vs full retraining.

On the demo world (400 customers x 4 cohorts x 12 months, the demo trainer; the newest month holds
only its labels before the 20th at first, the rest arrive in step 3), all partitions are
materialized through Dagster. Every model is scored on the holdout of its partition: the newest
``holdout_fraction`` of the partition's rows, the split ``fit_and_evaluate`` uses, so the holdout
rows are the ones the stored sub-models never saw. AUCs are pooled over the holdouts of all 12
windows (per cohort, and overall).

1. Per-cohort vs global: the stored sub-models vs, per window, one model fitted on the training
   rows of all cohorts (same trainer), without and with the cohort as a feature.
2. Drift: one cohort's second-newest month is rewritten with its engagement shifted and its
   churn drivers inverted (``scenarios.drift``). Partial retrain = one sensor tick plus its runs;
   full retrain = every partition again. Both are scored on the drifted data's holdouts, next to
   the stale models (no retrain).
3. Refit vs warm start: the newest month's remaining labels arrive (rows newer than what its
   sub-models saw, the case warm start is for); from the same saved state the sensor's runs refit,
   then (state restored) continue the current sub-models (``trainer.strategy: warm_start``).
   Reported as "not implemented" if the installed library has no strategy option.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from retrain_plugins.demo.project import DemoProject

from bench.common import DEMO_TRAINER, materialized, new_project
from bench.report import BenchResult, Check, Table

NAME = "quality"


class Size(NamedTuple):
    n_customers: int
    months: int
    trainer: dict[str, Any]


SIZES = {
    "quick": Size(60, 2, {**DEMO_TRAINER, "params": {"iterations": 30, "depth": 4}}),
    "default": Size(400, 12, DEMO_TRAINER),
}
COHORT_CODE = "cohort_code"
BOOTSTRAP = 1000  # paired resamples of the holdout rows for the AUC differences' intervals
CUTOFF_DAY = 20  # the newest month's labels from this day on arrive late (step 3)


def _frames(project: DemoProject) -> dict:
    """Every partition's stored training set (the one its current sub-model was trained on)."""
    import polars as pl

    from retrain_plugins.layout import training_set_path
    from retrain_plugins.partitions import PartitionKey, windows

    frames = {}
    for key in (PartitionKey(w.key, c) for w in windows(project.spec) for c in project.spec.cohorts):
        path = training_set_path(project.spec, key)
        if path.exists():
            frames[key] = pl.read_parquet(path)
    return frames


def _split(frames: dict, fraction: float) -> tuple[dict, dict]:
    """(training part, holdout) of each frame, split as ``fit_and_evaluate`` splits (library's ``holdout_size``)."""
    from retrain_plugins.trainers.base import holdout_size

    train, hold = {}, {}
    for key, frame in frames.items():
        n_hold = holdout_size(frame.height, fraction)
        if n_hold:
            train[key], hold[key] = frame.head(frame.height - n_hold), frame.tail(n_hold)
    return train, hold


def _score(project: DemoProject, entries: dict, hold: dict, features: list[str]) -> dict:
    """Predictions of the stored models ``entries`` on each partition's holdout."""
    from retrain_plugins.layout import model_store_root
    from retrain_plugins.store import ModelStore
    from retrain_plugins.trainers import make_trainer

    store = ModelStore(model_store_root(project.spec))
    trainer = make_trainer(project.spec.trainer.name, project.spec.trainer.params)
    return {
        key: trainer.predict_proba(trainer.load(store.path_of(entries[key])), frame.select(features))
        for key, frame in hold.items()
        if key in entries
    }


def _global(project: DemoProject, train: dict, hold: dict, features: list[str], with_cohort: bool) -> dict:
    """Per window, one model on all cohorts' training rows; predictions on each holdout."""
    import numpy as np
    import polars as pl

    from retrain_plugins.trainers import make_trainer

    spec = project.spec
    codes = {c: float(i) for i, c in enumerate(spec.cohorts)}
    cols = [*features, COHORT_CODE] if with_cohort else features

    def x(frame: pl.DataFrame) -> pl.DataFrame:
        coded = frame.with_columns(pl.col(spec.labels.cohort_column).replace_strict(codes).alias(COHORT_CODE))
        return coded.select(cols).cast(pl.Float64, strict=False)

    out = {}
    for window in sorted({k.window for k in hold}):
        keys = [k for k in hold if k.window == window]
        rows = pl.concat([train[k] for k in keys]).sort(spec.labels.timestamp_column, spec.labels.entity_column)
        trainer = make_trainer(spec.trainer.name, spec.trainer.params)
        model = trainer.fit(x(rows), rows[spec.labels.label_column].to_numpy().astype(np.int64))
        out.update({k: trainer.predict_proba(model, x(hold[k])) for k in keys})
    return out


def _pooled(preds: dict, hold: dict, label: str, keys) -> float | None:
    import numpy as np

    from retrain_plugins.trainers.base import auc_or_none

    keys = [k for k in keys if k in preds]
    if not keys:
        return None
    return auc_or_none(np.concatenate([hold[k][label].to_numpy() for k in keys]), np.concatenate([preds[k] for k in keys]))


def _difference_ci(mine: dict, theirs: dict, hold: dict, label: str, keys, seed: int = 0) -> tuple | None:
    """AUC(mine) - AUC(theirs) on the pooled holdout of ``keys``, with a 95% paired bootstrap interval.

    Both models are scored on the same resampled rows each time (paired), so the interval is that of
    the difference itself: one that contains 0 means this holdout cannot tell the two apart.
    """
    import numpy as np

    from retrain_plugins.trainers.base import auc_or_none

    keys = [k for k in keys if k in mine and k in theirs]
    if not keys:
        return None
    y = np.concatenate([hold[k][label].to_numpy() for k in keys]).astype(bool)
    a, b = np.concatenate([mine[k] for k in keys]), np.concatenate([theirs[k] for k in keys])
    point = _minus(auc_or_none(y, a), auc_or_none(y, b))
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(y), len(y))
        d = _rank_auc(y[i], a[i]) - _rank_auc(y[i], b[i])
        if not np.isnan(d):  # a resample with a single class has no AUC
            diffs.append(d)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return point, float(lo), float(hi)


def _rank_auc(y, scores) -> float:
    """AUC as the Mann-Whitney U statistic (ties averaged): equal to ``roc_auc_score``, without its
    per-call validation (~2 ms), which 2 x 1,000 resamples x 10 groups would turn into a minute."""
    from scipy.stats import rankdata

    pos = int(y.sum())
    neg = len(y) - pos
    if not pos or not neg:
        return float("nan")
    return float((rankdata(scores)[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _ci_text(ci: tuple | None) -> str:
    return "-" if ci is None else f"{ci[0]:+.3f} ({ci[1]:+.3f} to {ci[2]:+.3f})"


def _hold_back(data: Path, month: str, cutoff_day: int, label: str) -> Path:
    """Keep ``month``'s labels before ``cutoff_day`` in place; move the rest to a side file."""
    import polars as pl

    from retrain_plugins.demo.generate import source_dir, write_parquet

    path = source_dir(data, "labels", month) / "part-0.parquet"
    frame = pl.read_parquet(path)
    late = frame[label].dt.day() >= cutoff_day
    side = data.parent / f"held-back-{month}.parquet"
    write_parquet(frame.filter(late), side)
    write_parquet(frame.filter(~late), path)
    return side


def _warm_start(project: DemoProject, side: Path, month: str, features: list[str]) -> Table:
    """Refit vs warm start after the newest month's held-back labels arrive, from one saved state."""
    import shutil

    from retrain_plugins import build_definitions
    from retrain_plugins.dagster.execution import execute, tick
    from retrain_plugins.demo.generate import source_dir
    from retrain_plugins.spec import TrainerSpec

    table = Table(
        f"Refit vs warm start: the rest of {month}'s labels arrive (holdout AUC pooled over its partitions)",
        ["strategy asked", "strategy used", "partitions fitted", "promoted", "training seconds (sum)", "holdout AUC of served models"],
    )
    if "strategy" not in TrainerSpec.model_fields:
        table.rows.append(["warm_start", "not implemented in retrain_plugins", "-", "-", "-", "-"])
        return table
    shutil.copy(side, source_dir(project.data, "labels", month) / "part-late.parquet")
    saved = project.root / "saved"
    kept = ("models", "state", "training_sets")
    for name in kept:
        shutil.copytree(project.data / name, saved / name)
    for strategy in ("refit", "warm_start"):
        for name in kept:
            shutil.rmtree(project.data / name)
            shutil.copytree(saved / name, project.data / name)
        spec = project.spec.model_copy(update={"trainer": project.spec.trainer.model_copy(update={"strategy": strategy})})
        defs = build_definitions(spec)
        requested = tick(defs, project.sensor, project.instance)
        results = execute(defs, spec, requested.run_requests, project.instance, log_level="ERROR")
        fitted = materialized(results)
        _, hold = _split({k: f for k, f in _frames(project).items() if k.window.startswith(month)}, spec.trainer.holdout_fraction)
        preds = _score(project, _entries(project), hold, features)
        table.rows.append(
            [
                strategy,
                ", ".join(sorted({str(m.get("strategy")) for m in fitted})) or "-",
                len(fitted),
                sum(m.get("status") == "trained" for m in fitted),
                f"{sum(float(m.get('training_seconds') or 0.0) for m in fitted):.2f}",
                _pooled(preds, hold, project.spec.labels.label_column, hold),
            ]
        )
    table.notes.append(
        "Same data, same starting models for both rows; 'promoted': candidates the champion/challenger gate let serve. "
        "Warm start appends trees fitted on the new rows only (CatBoost init_model)."
    )
    return table


def _entries(project: DemoProject) -> dict:
    from retrain_plugins.layout import model_store_root
    from retrain_plugins.store import ModelStore

    return ModelStore(model_store_root(project.spec)).entries()


def run(size: str, workdir: Path, cache: Path, reps: int | None = None) -> BenchResult:
    """Score per-cohort vs global models, and partial vs full retraining after drift.

    Args:
        size: ``quick`` or ``default``.
        workdir: Empty folder for this benchmark's project.
        cache: Shared folder of generated worlds.
        reps: Ignored: quality figures are deterministic (fixed seeds), measured once.

    Returns:
        Two tables (per-cohort vs global; drift) plus the warm-start row, and the quality targets.
    """
    from retrain_plugins.dagster.execution import execute, materialize_all, tick
    from retrain_plugins.demo import scenarios
    from retrain_plugins.demo.generate import DemoConfig, month_name
    from retrain_plugins.feast_view import load_feature_service_view

    chosen = SIZES[size]
    config = DemoConfig(n_customers=chosen.n_customers, months=chosen.months)
    project = new_project(workdir / "project", config, cache, trainer=chosen.trainer)
    spec, label = project.spec, project.spec.labels.label_column
    features = load_feature_service_view(spec).feature_columns
    newest = month_name(config.month_start(config.months - 1))
    side = _hold_back(project.data, newest, CUTOFF_DAY, spec.labels.timestamp_column)
    try:
        if not materialize_all(project.defs, spec, project.instance, log_level="ERROR").success:
            raise RuntimeError("the full materialization failed")
        train, hold = _split(_frames(project), spec.trainer.holdout_fraction)
        stale = _entries(project)
        models = {
            "per-cohort sub-models (served)": _score(project, stale, hold, features),
            "one global model per window": _global(project, train, hold, features, with_cohort=False),
            "one global model per window, cohort as a feature": _global(project, train, hold, features, with_cohort=True),
        }
        cohorts = list(spec.cohorts)
        compare = Table(
            f"Per-cohort vs global: holdout AUC pooled over {chosen.months} windows",
            ["model", *cohorts, "overall"],
            [
                [name, *(_pooled(p, hold, label, [k for k in hold if k.cohort == c]) for c in cohorts), _pooled(p, hold, label, hold)]
                for name, p in models.items()
            ],
            [
                f"{sum(h.height for h in hold.values()):,} holdout rows over {len(hold)} partitions; the holdout is the newest "
                f"{spec.trainer.holdout_fraction:.0%} of each partition. The global models use the same trainer and parameters.",
            ],
        )

        per_cohort = models["per-cohort sub-models (served)"]
        cis = {
            name: [
                *(_difference_ci(per_cohort, p, hold, label, [k for k in hold if k.cohort == c]) for c in cohorts),
                _difference_ci(per_cohort, p, hold, label, hold),
            ]
            for name, p in list(models.items())[1:]
        }
        significance = Table(
            "Per-cohort minus global: AUC difference with its 95% paired bootstrap interval",
            ["per-cohort sub-models minus", *cohorts, "overall"],
            [[name, *(_ci_text(ci) for ci in row)] for name, row in cis.items()],
            [
                f"{BOOTSTRAP} resamples (with replacement) of the pooled holdout rows, both models scored on the same "
                "resample (seeded). An interval that contains 0 means this holdout cannot tell the two models apart.",
            ],
        )

        drifted, month = cohorts[1], month_name(config.month_start(config.months - 2))
        scenarios.drift(config, project.data, drifted, month)
        requested = tick(project.defs, project.sensor, project.instance)
        fitted = materialized(execute(project.defs, spec, requested.run_requests, project.instance, log_level="ERROR"))
        partial = _entries(project)
        promoted = sorted(str(k) for k in partial if partial[k]["sha256"] != stale.get(k, {}).get("sha256"))
        if not materialize_all(project.defs, spec, project.instance, log_level="ERROR").success:
            raise RuntimeError("the full materialization after drift failed")
        full = _entries(project)
        train, hold = _split(_frames(project), spec.trainer.holdout_fraction)
        warm = _warm_start(project, side, newest, features)
    finally:
        project.close()
    hit = [k for k in hold if k.cohort == drifted and k.window.startswith(month)]
    rest = [k for k in hold if k not in hit]
    drift_rows: list = []
    aucs: dict[str, tuple[float | None, float | None]] = {}
    for name, entries in (("no retrain (stale models)", stale), ("partial retrain (sensor tick + runs)", partial), ("full retrain (all partitions)", full)):
        preds = _score(project, entries, hold, features)
        aucs[name] = (_pooled(preds, hold, label, hit), _pooled(preds, hold, label, rest))
        drift_rows.append([name, *aucs[name]])
    (p_hit, p_rest), (f_hit, f_rest) = aucs["partial retrain (sensor tick + runs)"], aucs["full retrain (all partitions)"]
    gaps = [_minus(p_hit, f_hit), _minus(p_rest, f_rest)]
    drift_rows.append(["partial - full", *gaps])
    drift = Table(
        f"After drift in cohort {drifted}, month {month}: holdout AUC",
        ["models", f"drifted partition ({drifted}, {month})", "all other partitions (pooled)"],
        drift_rows,
        [
            f"The partial retrain fitted {len(fitted)} partition(s): {_describe(fitted)}; {len(promoted)} new model(s) "
            f"serve: {', '.join(promoted) or 'none'} (the champion/challenger gate applies to partial and full alike).",
            "Training is deterministic (fixed seed and thread count), so a partition whose training set did not "
            "change gets the same predictions from a full refit: partial and full can only differ where the "
            "sensor missed a change.",
        ],
    )
    per, glob_plain, glob_coded = (compare.rows[i][1:] for i in range(3))
    known = [abs(g) for g in gaps if g is not None]
    gap = max(known) if known else None
    checks = [
        Check(
            "per-cohort vs one global model (AUC overall; every cohort)",
            f"{_f(per[-1])} vs {_f(glob_plain[-1])}; per cohort " + ", ".join(f"{_f(a)}/{_f(b)}" for a, b in zip(per[:-1], glob_plain[:-1])),
            ">= global",
            _at_least(per, glob_plain),
        ),
        Check(
            "per-cohort vs one global model with the cohort as a feature (AUC overall; every cohort)",
            f"{_f(per[-1])} vs {_f(glob_coded[-1])}; per cohort " + ", ".join(f"{_f(a)}/{_f(b)}" for a, b in zip(per[:-1], glob_coded[:-1]))
            + _losses_in_noise(cis["one global model per window, cohort as a feature"], cohorts),
            ">= global",
            _at_least(per, glob_coded),
        ),
        Check(
            "partial vs full retrain after drift (|AUC difference|)",
            "no AUC (single-class holdout)" if gap is None else f"{gap:.4f}",
            "<= 0.002",
            None if gap is None else gap <= 0.002,
        ),
        Check("refit vs warm start", _warm_summary(warm), "reported (no target)", None),
    ]
    return BenchResult(NAME, "4. Quality", [compare, significance, drift, warm], checks)


def _losses_in_noise(cis: list, cohorts: list[str]) -> str:
    """Where per-cohort loses, whether the loss is inside the bootstrap interval's reach of 0."""
    losses = [(c, ci) for c, ci in zip([*cohorts, "overall"], cis) if ci is not None and ci[0] < 0]
    if not losses:
        return ""
    noise = [c for c, ci in losses if ci[2] >= 0]
    real = [c for c, ci in losses if ci[2] < 0]
    parts = [f"losses within noise (95% interval contains 0): {', '.join(noise)}"] if noise else []
    parts += [f"losses beyond noise: {', '.join(real)}"] if real else []
    return "; " + "; ".join(parts)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _at_least(mine: Sequence, theirs: Sequence) -> bool | None:
    pairs = [(a, b) for a, b in zip(mine, theirs) if a is not None and b is not None]
    return all(a >= b for a, b in pairs) if pairs else None


def _describe(fitted: list[dict]) -> str:
    return ", ".join(f"{m.get('partition')} ({m.get('reason')}, {m.get('status')})" for m in fitted) or "none"


def _warm_summary(table: Table) -> str:
    if len(table.rows) < 2:
        return "not implemented"
    return "; ".join(f"{r[0]}: AUC {_f(r[-1])}, training {r[-2]} s" for r in table.rows)
