"""Per-partition reasons and details survive any run size: runs read the tick's request log."""

from __future__ import annotations

from dagster import AssetRecordsFilter, materialize

from retrain_plugins.changes.detector import state_store
from retrain_plugins.dagster.execution import retraining_assets, tick
from retrain_plugins.changes.request_log import Requested, read_request_log, request_log, write_request_log
from retrain_plugins.dagster.tags import DETAIL_TAG, REASON_TAG, REASONS_TAG, SEQ_TAG, RequestLookup, reason_tags
from retrain_plugins.demo.generate import DemoConfig
from retrain_plugins.partitions import PartitionKey, encode_cohort, windows

from .helpers import make_spec

# 50 weeks x 4 cohorts = 200 partitions; ~8 label rows per week and cohort, so every one is requested.
WEEKS = {"granularity": "weekly", "start": "2025-01-06", "end": "2025-12-22"}


def test_a_200_partition_run_records_each_partitions_own_reason_and_detail(make_project):
    project = make_project(
        config=DemoConfig(n_customers=60, months=12),
        windows=WEEKS,
        dynamic_cohorts=True,
        retrieval="duckdb_asof",
        fallback={"enabled": False},
    )
    spec, instance = project.spec, project.instance
    assert len(windows(spec)) == 50
    # Two cohorts known to the instance (new_data), two only in the data (new_cohort, added by the tick).
    instance.add_dynamic_partitions(f"{spec.name}_cohort", [encode_cohort(c) for c in ("east", "north")])
    result = tick(project.defs, project.sensor, instance)
    (request,) = result.run_requests
    seq = int(request.tags[SEQ_TAG])
    logged = {key: (reason, detail) for _, key, reason, _, detail in state_store(spec).requests(seq)}
    assert len(logged) == 200
    assert {reason for reason, _ in logged.values()} == {"new_data", "new_cohort"}
    assert len({detail for _, detail in logged.values()}) > 10  # row counts differ per partition
    # Too big for the per-partition tags: only the joined reason set is in the run's tags.
    assert REASONS_TAG not in request.tags and DETAIL_TAG not in request.tags
    assert request.tags[REASON_TAG] == "new_cohort,new_data"
    assert {k: (r.reason, r.detail) for k, r in read_request_log(spec, seq).items()} == logged

    train = [k for k in request.asset_selection if k.path[-1] in ("training_set", "sub_model")]
    run = materialize(
        retraining_assets(project.defs, spec),
        instance=instance,
        resources=project.defs.resources,
        selection=train,
        tags=dict(request.tags),
        raise_on_error=False,  # a few weeks hold one label class: failed, recorded by an observation
    )
    sub_model = next(k for k in train if k.path[-1] == "sub_model")
    recorded, statuses = {}, set()
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        for record in fetch(AssetRecordsFilter(asset_key=sub_model), limit=1000).records:
            event = record.asset_materialization or record.asset_observation
            assert record.run_id == run.run_id
            meta = {name: value.value for name, value in event.metadata.items()}
            recorded[PartitionKey.from_dagster(event.partition)] = (meta["reason"], meta["change"])
            statuses.add(meta["status"])
    assert recorded == logged
    assert "trained" in statuses


def test_lookup_order_log_then_the_sensors_state_then_tags(tmp_path):
    spec = make_spec(tmp_path)
    a, b = PartitionKey("2025-01-01", "east"), PartitionKey("2025-02-01", "west")
    # a run started by hand: no tick, no log
    assert RequestLookup(spec, {})(a) == Requested("manual", None)
    # a tick before request logs existed: the sensor's own log on this host, read only
    state = state_store(spec)
    state.log_requests(3, [(a, "late_data", "fp-a", "12 rows (was 10)")])
    tags = {SEQ_TAG: "3", **reason_tags({a: "late_data"})}
    assert RequestLookup(spec, tags)(a) == Requested("late_data", "12 rows (was 10)", "fp-a")
    assert RequestLookup(spec, tags)(b) == Requested("late_data", None)  # not in that tick: the tags
    # the storage's log wins over both
    write_request_log(spec, 3, [(a, "edited_rows", "fp-a2", "3 rows edited"), (b, "drift", "fp-b", "PSI 0.4")])
    assert request_log(spec).exists("3.json")
    lookup = RequestLookup(spec, tags)
    assert lookup(a) == Requested("edited_rows", "3 rows edited", "fp-a2")
    assert lookup(b) == Requested("drift", "PSI 0.4", "fp-b")


def test_the_log_keeps_the_last_ticks_and_the_numbering(tmp_path, monkeypatch):
    """Logs of old ticks are pruned every PRUNE_EVERY ticks, past KEEP_LOGS; the newest always
    stays, so a rebuilt state still numbers its ticks after it (last_logged_seq)."""
    from retrain_plugins.changes import request_log as log_module

    monkeypatch.setattr(log_module, "KEEP_LOGS", 25)
    monkeypatch.setattr(log_module, "PRUNE_EVERY", 10)
    spec = make_spec(tmp_path)
    key = PartitionKey("2025-01-01", "east")
    for seq in range(1, 46):
        write_request_log(spec, seq, [(key, "late_data", f"fp-{seq}", None)])
    logged = sorted(int(name.split(".")[0]) for name in request_log(spec).glob("*.json"))
    assert logged == list(range(16, 46))  # pruned at 40: 1..15 (40 - 25) went
    assert read_request_log(spec, 15) is None and read_request_log(spec, 16)[key].fingerprint == "fp-16"
    assert log_module.last_logged_seq(spec) == 45
