"""Property: after any sequence of data changes, partial retraining == a fresh full retrain.

Hypothesis draws short sequences of real scenario changes (appended month, late rows, edited rows,
identical rewrites, a feature-row edit, a new cohort). After each step the sensor ticks and its
runs execute. The oracle is independent of the sensor's machinery (file listings, stored cells,
MD5 sums): the DuckDB ASOF training set of every partition, compared frame by frame before and
after the step. At every step the retrained set must equal the set whose training set changed; at
the end every sub-model must predict bit-identically to one from a full retrain of the final data
(CatBoost .cbm bytes differ between identical fits, see PITFALLS.md), and sub-models never
affected must still be the very same files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from retrain_plugins import asof_training_set, load_feature_service_view
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import DemoConfig, write_parquet
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import PartitionKey, windows
from retrain_plugins.store import ModelStore
from retrain_plugins.trainers import make_trainer
from retrain_plugins.labels import ROW_ID, WINDOW_COL

from .conftest import Project, new_project

CONFIG = DemoConfig(n_customers=30, cohorts=("east", "north"), months=3)
MONTHS = ["2025-01", "2025-02", "2025-03"]
OVERRIDES = {
    "cohorts": ["east", "north"],
    "dynamic_cohorts": True,
    "windows": {"end": "2025-05-01"},  # room for one appended month
    "change_detection": {"drift": {"enabled": False}},
}

steps = st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(MONTHS), st.sampled_from(["east", "north"])),
    st.tuples(st.just("late"), st.sampled_from(MONTHS), st.sampled_from(["east", "north"])),
    st.tuples(st.just("rewrite"), st.sampled_from(["labels", "activity", "profile"]), st.sampled_from(MONTHS)),
    st.tuples(st.just("feature_edit"), st.sampled_from(MONTHS), st.sampled_from(["east", "north"])),
    st.tuples(st.just("append"), st.none(), st.none()),
    st.tuples(st.just("new_cohort"), st.none(), st.none()),
)


def _apply(project: Project, step: tuple, counter: list[int]) -> None:
    kind, a, b = step
    counter[0] += 1
    if kind == "edit":
        scenarios.edit_rows(project.data, a, b, seed=counter[0])
    elif kind == "late":
        scenarios.late_rows(CONFIG, project.data, a, cohorts=(b,), batch=counter[0])
    elif kind == "rewrite":
        scenarios.rewrite_identical(project.data, a, b)
    elif kind == "feature_edit":
        path = project.data / "sources" / "activity" / f"month={a}" / "part-0.parquet"
        frame = pl.read_parquet(path)
        lo = CONFIG.cohorts.index(b) * 1_000_000
        hit = pl.col("customer_id").is_between(lo, lo + 999_999) & (pl.col("event_timestamp").dt.day() >= 10)
        write_parquet(frame.with_columns(pl.when(hit).then(pl.col("orders_30d") + counter[0]).otherwise(pl.col("orders_30d")).alias("orders_30d")), path)
    elif kind == "append" and not (project.data / "sources" / "labels" / "month=2025-04").exists():
        scenarios.append_month(CONFIG, project.data)
    elif kind == "new_cohort" and not list((project.data / "sources" / "labels").rglob("part-central.parquet")):
        scenarios.new_cohort(CONFIG, project.data, "central", months=1)


def _training_sets(project: Project) -> dict[PartitionKey, pl.DataFrame]:
    spec = project.spec
    frame = asof_training_set(spec, load_feature_service_view(spec), windows(spec), None)
    return {
        PartitionKey(w, c): part.drop(ROW_ID).sort(pl.all())
        for (w, c), part in frame.partition_by([WINDOW_COL, "region"], as_dict=True).items()
    }


def _changed(before: dict, after: dict) -> set[PartitionKey]:
    return {k for k in set(before) | set(after) if k not in before or k not in after or not before[k].equals(after[k])}


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(steps, min_size=1, max_size=3))
# Every kind of change runs on every CI run, whatever Hypothesis draws on top.
@example([("feature_edit", "2025-02", "east"), ("append", None, None), ("new_cohort", None, None)])
@example([("late", "2025-01", "north"), ("rewrite", "labels", "2025-02"), ("edit", "2025-03", "east")])
def test_partial_retraining_equals_full_retraining(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        project = new_project(Path(tmp) / "incremental", CONFIG, **OVERRIDES)
        assert materialize_all(project.defs, project.spec, project.instance).success
        assert tick(project.defs, project.sensor, project.instance).run_requests == []
        initial = project.artifact_digests()
        ever_affected: set[PartitionKey] = set()
        counter = [0]
        sets = _training_sets(project)
        for step in sequence:
            _apply(project, step, counter)
            now = _training_sets(project)
            expected = _changed(sets, now)
            result = tick(project.defs, project.sensor, project.instance)
            before = project.artifact_digests()
            assert all(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance))
            after = project.artifact_digests()
            retrained = {k for k in after if before.get(k) != after[k]}
            requested = {PartitionKey.from_dagster(k) for r in result.run_requests for k in _keys(project, r)}
            assert requested == expected, (step, requested, expected)
            assert retrained == {k for k in expected if k in now}, step  # partitions left empty keep no new model
            ever_affected |= expected
            sets = now

        untouched = {k: v for k, v in initial.items() if k not in ever_affected}
        assert {k: project.artifact_digests()[k] for k in untouched} == untouched
        _assert_same_as_full_retrain(project, Path(tmp) / "full", sets)


def _keys(project: Project, request) -> list:
    """The partition keys Dagster runs for a request's range (its own range semantics)."""
    from dagster import AssetKey

    sub_model = AssetKey([project.spec.name, "sub_model"])
    definition = project.defs.resolve_asset_graph().get(sub_model).partitions_def
    return definition.get_partition_keys_in_range(request.partition_key_range, dynamic_partitions_store=project.instance)


def _assert_same_as_full_retrain(project: Project, root: Path, final_sets: dict) -> None:
    root.mkdir()
    shutil.copytree(project.data / "sources", root / "data" / "sources")
    cohorts = sorted({k.cohort for k in final_sets})
    full = new_project(root, None, **{**OVERRIDES, "dynamic_cohorts": False, "cohorts": cohorts})
    assert materialize_all(full.defs, full.spec, full.instance).success
    trainer = make_trainer("catboost")
    partial_store = ModelStore(model_store_root(project.spec))
    full_store = ModelStore(model_store_root(full.spec))
    partial, fresh = partial_store.entries(), full_store.entries()
    assert set(partial) == set(fresh)
    for key, entry in fresh.items():
        probe = final_sets[key].select(entry["feature_columns"])
        p_full = trainer.predict_proba(trainer.load(full_store.path_of(entry)), probe)
        p_partial = trainer.predict_proba(trainer.load(partial_store.path_of(partial[key])), probe)
        assert np.array_equal(p_full, p_partial), key
        assert partial[key]["fingerprint"] == entry["fingerprint"], key
