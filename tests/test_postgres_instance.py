"""The retraining on a Dagster instance stored in a real PostgreSQL (in-process runs).

The instance is the deployment guide's ``docs/deploy/dagster-postgres.yaml`` loaded with
``DagsterInstance.from_config``, against a PostgreSQL 15 started by the ``postgres`` fixture. A
full materialization, a sensor tick (``build_sensor_context(instance=...)``) and the run it
requests all go through that instance, and what they wrote is read back from PostgreSQL: by a
second instance loaded from the same file and by plain SQL on a connection of its own.
"""

from __future__ import annotations

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.dagster.tags import REASON_TAG, RETRAINING_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.partitions import PartitionKey

from .conftest import new_project
from .helpers import COHORTS
from .postgres import write_postgres_instance

SUB_MODEL = AssetKey(["churn", "sub_model"])
TRAINING_SET = AssetKey(["churn", "training_set"])
ALL_KEYS = {PartitionKey(f"2025-0{m}-01", c) for c in COHORTS for m in (1, 2, 3)}
EDITED = PartitionKey("2025-02-01", "north")


@pytest.fixture
def pg_home(postgres, tmp_path, monkeypatch, request):
    """A DAGSTER_HOME with the guide's Postgres dagster.yaml, on a fresh database of its own."""
    db = postgres.create_database(f"inproc_{request.node.name[:40].lower()}")
    for name, value in postgres.env(db).items():
        monkeypatch.setenv(name, value)
    return write_postgres_instance(tmp_path / "dagster_home"), db


def _materialized(postgres, db, run_id: str) -> set[tuple[str, PartitionKey | None]]:
    """(asset, partition) materialized by ``run_id``, straight from PostgreSQL's event log table."""
    rows = postgres.query(
        db,
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (run_id,),
    )
    return {
        (AssetKey.from_db_string(key).to_user_string(), PartitionKey.from_dagster(p) if p else None) for key, p in rows
    }


def test_materialize_tick_and_retrain_on_a_postgres_instance(postgres, pg_home, tmp_path):
    home, db = pg_home
    with DagsterInstance.from_config(str(home)) as instance:
        # really PostgreSQL for every storage, and the guide's queue settings
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.get_run_queue_config().tag_concurrency_limits == [
            {"key": RETRAINING_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
        ]
        assert not (home / "history").exists() and not (home / "storage").exists()  # no sqlite beside it

        project = new_project(tmp_path / "project")._replace(instance=instance)
        full = materialize_all(project.defs, project.spec, instance)
        assert full.success
        full_rows = _materialized(postgres, db, full.run_id)
        for asset in ("churn/training_set", "churn/sub_model"):
            assert {k for a, k in full_rows if a == asset} == ALL_KEYS, asset

        first = tick(project.defs, project.sensor, instance)
        assert first.run_requests == [] and first.skip_message.startswith("no partition changed"), first

        before = project.artifact_digests()
        assert scenarios.edit_rows(project.data, "2025-02", EDITED.cohort)
        result = tick(project.defs, project.sensor, instance)
        (request,) = result.run_requests
        assert request.tags[RETRAINING_TAG] == "churn" and request.tags[REASON_TAG] == "edited_rows"
        (run,) = execute(project.defs, project.spec, result.run_requests, instance)
        assert run.success

        after = project.artifact_digests()
        assert {k for k in before if before[k] != after[k]} == {EDITED}
        assert {k: v for k, v in after.items() if k != EDITED} == {k: v for k, v in before.items() if k != EDITED}
        again = tick(project.defs, project.sensor, instance)
        assert again.run_requests == [], again

    # read back from PostgreSQL: another instance from the same dagster.yaml ...
    with DagsterInstance.from_config(str(home)) as reader:
        runs = {r.run_id: r for r in reader.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))}
        assert set(runs) == {full.run_id, run.run_id}
        assert runs[run.run_id].tags[REASON_TAG] == "edited_rows"
        records = reader.fetch_materializations(SUB_MODEL, limit=100).records
        assert {PartitionKey.from_dagster(r.partition_key) for r in records if r.run_id == run.run_id} == {EDITED}
        (latest,) = [r for r in records if r.run_id == run.run_id]
        metadata = latest.asset_materialization.metadata
        assert metadata["reason"].value == "edited_rows" and metadata["status"].value == "trained"
        assert len(records) == len(ALL_KEYS) + 1
    # ... and plain SQL on a connection of its own
    rows = _materialized(postgres, db, run.run_id)
    assert {(a, k) for a, k in rows if k is not None} == {("churn/training_set", EDITED), ("churn/sub_model", EDITED)}
    assert "churn/model_bundle" in {a for a, k in rows if k is None}  # and the unpartitioned serving assets
    assert {a for a, _ in rows} == {key.to_user_string() for key in request.asset_selection}
    statuses = dict(postgres.query(db, "SELECT run_id, status FROM runs"))
    assert statuses == {full.run_id: "SUCCESS", run.run_id: "SUCCESS"}


@pytest.mark.parametrize(
    ("scheme", "works"), [("postgresql+psycopg2", True), ("postgresql", False)], ids=["psycopg2", "plain"]
)
def test_url_scheme_pitfall(postgres, tmp_path, scheme, works):
    """Why the guide names ``postgresql+psycopg2``: SQLAlchemy 2.1 reads plain ``postgresql://``
    as psycopg 3, which the lock does not install (psycopg2-binary is the ``postgres`` extra's)."""
    db = postgres.create_database(f"scheme_{'ok' if works else 'plain'}")
    home = tmp_path / "home"
    home.mkdir()
    url = postgres.url(db, scheme=scheme)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}}}))
    if works:
        with DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_runs() == []
        assert postgres.query(db, "SELECT count(*) FROM runs") == [(0,)]  # the tables are there, empty
    else:
        with pytest.raises(ModuleNotFoundError, match="psycopg"):
            DagsterInstance.from_config(str(home))
