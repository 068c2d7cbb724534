"""A whole retraining with its storage (sub-models, training sets, bundle) on S3 (a real moto server).

The same project is run twice, once on local disk and once with ``store.url: s3://...``: the
same partitions are trained and requested, the routed predictions are identical, and an update
leaves every other sub-model object untouched (ETag and bytes), exactly as on local disk.
"""

from __future__ import annotations

import json

import polars as pl

from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.demo.scenarios import edit_rows
from retrain_plugins.layout import model_store, training_sets
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import RoutedModel

EDITED = PartitionKey("2025-02-01", "north")


def _requested(requests) -> set[PartitionKey]:
    from retrain_plugins.dagster.tags import REASONS_TAG

    return {PartitionKey(*k.split("/", 1)) for r in requests for k in json.loads(r.tags[REASONS_TAG])}


def test_a_retraining_on_s3_storage_behaves_as_on_local_disk(materialized, make_project, s3):
    local = materialized  # the same project fully materialized on local disk (a copy of the session's)
    remote = make_project("remote", store={"url": s3.url("retrain")})
    assert remote.spec.store.url == f"s3://{s3.bucket}/retrain"
    assert materialize_all(remote.defs, remote.spec, remote.instance).success

    # everything the retraining writes is in the bucket, nothing on the remote project's disk
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="retrain/")["Contents"]]
    assert any(k.startswith("retrain/models/churn/artifacts/") for k in keys)
    assert any(k.startswith("retrain/models/churn/entries/") for k in keys)
    assert "retrain/models/churn/bundle.json" in keys
    assert sum(k.startswith("retrain/training_sets/churn/") and k.endswith(".parquet") for k in keys) == 12
    assert not (remote.data / "models").exists() and not (remote.data / "training_sets").exists()
    assert {k: e["fingerprint"] for k, e in model_store(remote.spec).entries().items()} == {
        k: e["fingerprint"] for k, e in model_store(local.spec).entries().items()
    }

    # routed predictions: loaded from the bucket by URL, identical to the local store's
    probe = pl.read_parquet(training_sets(local.spec).local_path("2025-03-01/south.parquet"))
    from_s3 = RoutedModel.load(f"s3://{s3.bucket}/retrain/models/churn").predict(probe)
    from_disk = RoutedModel.load(model_store(local.spec).storage).predict(probe)
    assert from_s3["prediction"].to_list() == from_disk["prediction"].to_list()
    assert from_s3["served_by"].to_list() == from_disk["served_by"].to_list()

    # an edit of one partition's labels: the same request on both, and on S3 the other sub-model
    # objects are not rewritten (ETag) while the edited partition's model changes
    store = model_store(remote.spec)
    before = {k: (e["sha256"], store.storage.token(e["path"])) for k, e in store.entries().items()}
    for project in (local, remote):
        assert edit_rows(project.data, EDITED.window[:7], EDITED.cohort, fraction=0.3, seed=3)
    requested = {}
    for name, project in (("local", local), ("remote", remote)):
        first = tick(project.defs, project.sensor, project.instance)
        requested[name] = _requested(first.run_requests)
        assert all(r.success for r in execute(project.defs, project.spec, first.run_requests, project.instance))
    # lookback 1: the edited window's partition only
    assert requested["local"] == requested["remote"] == {EDITED}
    after = {k: (e["sha256"], store.storage.token(e["path"])) for k, e in store.entries().items()}
    assert {k for k in after if after[k] != before[k]} == {EDITED}
    # rows of the edited month, routed by their time to the retrained sub-model: same predictions
    edited = pl.read_parquet(training_sets(local.spec).local_path("2025-02-01/north.parquet"))
    from_s3 = RoutedModel.load(store.storage).predict(edited, timestamp_column="label_timestamp")
    from_disk = RoutedModel.load(model_store(local.spec).storage).predict(edited, timestamp_column="label_timestamp")
    assert set(from_s3["served_by"]) == {str(EDITED)}
    assert from_s3["prediction"].to_list() == from_disk["prediction"].to_list()

    # the next tick reads the run's outcome from the event log: nothing left to do on either
    for project in (local, remote):
        assert tick(project.defs, project.sensor, project.instance).run_requests == []
