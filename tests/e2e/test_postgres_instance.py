"""``dagster dev`` on a Dagster instance stored in a real PostgreSQL, driven over GraphQL.

The instance is the deployment guide's ``docs/deploy/dagster-postgres.yaml`` (storage on
PostgreSQL, ``QueuedRunCoordinator`` with a tag concurrency limit, the default run launcher) with
one run at a time (2 cores), against the PostgreSQL 15 the ``postgres`` fixture starts. The
project is the usual test size (12 partitions), fully materialized in-process on that instance
before the server starts. Then, as a user would from the UI: start the change sensor, backfill a
partition range, edit one partition's labels, and let the daemon's sensor retrain exactly that one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from retrain_plugins.dagster.component import spec_from_defs_yaml
from retrain_plugins.dagster.execution import materialize_all
from retrain_plugins.dagster.tags import RETRAINING_TAG, SERVING_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.partitions import PartitionKey

from ..conftest import Project, new_project
from ..postgres import PostgresServer, write_postgres_instance
from .dagster_dev import BUNDLE, LOCATION, PACKAGE, SUB_MODEL, TRAINING_SET, DagsterDev, serving, write_code_location
from .graphql import GraphQL, RANGE_TAGS, by_run, latest, wait_for

READY_TIMEOUT = 240.0
BACKFILL_TIMEOUT = 240.0  # the backfill daemon loops every 30 s
RUN_TIMEOUT = 180.0
TICK_TIMEOUT = 90.0
DB = "e2e_dagster"
# the guide's file, one run at a time (two CatBoost fits at once slow each other on 2 cores)
OVERRIDES = {
    "run_coordinator": {"config": {"max_concurrent_runs": 1}},
    "code_servers": {"local_startup_timeout": 240},
}
BACKFILLED = ["west|2025-01-01", "west|2025-02-01", "west|2025-03-01"]  # one cohort, every month: one run
EDITED = PartitionKey("2025-02-01", "east")
SENSOR = "churn_change_sensor"


@dataclass
class OnPostgres:
    project: Project
    server: DagsterDev
    postgres: PostgresServer

    @property
    def graphql(self) -> GraphQL:
        return self.server.graphql

    def digests(self) -> dict[PartitionKey, tuple[str, str]]:
        """(path, sha256 of the bytes) of every current sub-model file."""
        return {k: (path, sha) for k, (path, sha, _) in self.project.artifact_digests().items()}

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        return self.postgres.query(DB, query, params)


@pytest.fixture(scope="module")
def on_postgres(postgres, tmp_path_factory) -> Iterator[OnPostgres]:
    root = tmp_path_factory.mktemp("e2e_pg")
    postgres.create_database(DB)
    with pytest.MonkeyPatch.context() as env:
        for name, value in postgres.env(DB).items():  # what the dagster.yaml reads, here and in dagster dev
            env.setenv(name, value)
        project = new_project(root / "project")
        home = write_postgres_instance(root / "dagster_home", OVERRIDES)
        workspace = write_code_location(root / "location", project.spec)
        assert spec_from_defs_yaml(root / "location" / PACKAGE / "defs" / "churn" / "defs.yaml") == project.spec
        with DagsterInstance.from_config(str(home)) as instance:
            assert materialize_all(project.defs, project.spec, instance).success
        with serving(workspace, home, root / "dagster_dev.log", READY_TIMEOUT, env=postgres.env(DB)) as server:
            yield OnPostgres(project, server, postgres)


def test_the_server_runs_on_the_guides_postgres_instance(on_postgres):
    gql = on_postgres.graphql.instance()
    assert gql["runLauncher"]["name"] == "DefaultRunLauncher"
    assert gql["runQueuingSupported"] is True
    queue = gql["runQueueConfig"]
    assert queue["maxConcurrentRuns"] == 1
    assert yaml.safe_load(queue["tagConcurrencyLimitsYaml"]) == [
        {"key": RETRAINING_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
    ]
    # Dagster's tables are in PostgreSQL (the in-process full build is there), nothing in sqlite files
    assert on_postgres.sql("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")[0][0] >= 1
    home = on_postgres.server.home
    assert sorted(p.name for p in home.glob("**/*.db")) == [], "a sqlite storage file next to the Postgres instance"


def _finished_ticks(gql: GraphQL, after: float) -> list[dict]:
    return gql.finished_ticks(LOCATION, SENSOR, after)


def _settle(gql: GraphQL, since: float, quiet_after: float) -> list[dict]:
    return gql.settle(LOCATION, SENSOR, since, quiet_after, TICK_TIMEOUT, RUN_TIMEOUT)


def test_sensor_backfill_and_sensor_driven_update_on_postgres(on_postgres):
    gql, project = on_postgres.graphql, on_postgres.project
    started = time.time()
    all_keys = set(latest(gql.materializations(SUB_MODEL)))
    assert len(all_keys) == 12  # the in-process full build, read back through the server

    # (a) start the change sensor: the daemon ticks it, and nothing has changed since the full build
    assert project.sensor == SENSOR and gql.start_sensor(LOCATION, SENSOR) == "RUNNING"
    first = wait_for(lambda: _finished_ticks(gql, started - 1), TICK_TIMEOUT, "the sensor's first tick")[0]
    assert first["status"] == "SKIPPED" and first["skipReason"].startswith("no partition changed"), first

    # (b) a partition-range backfill over GraphQL: one run, exactly the range
    before = on_postgres.digests()
    backfill_id = gql.launch_range_backfill([TRAINING_SET, SUB_MODEL], BACKFILLED[0], BACKFILLED[-1], "e2e pg: west")
    try:
        backfill = gql.wait_backfill(backfill_id, BACKFILL_TIMEOUT)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {gql.backfill(backfill_id)}\n{on_postgres.server.log_tail()}") from None
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"} and backfill["error"] is None, backfill
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"], backfill["runs"]
    backfill_run = gql.run(backfill["runs"][0]["runId"])
    assert (backfill_run["tags"][RANGE_TAGS[0]], backfill_run["tags"][RANGE_TAGS[1]]) == (BACKFILLED[0], BACKFILLED[-1])
    for asset in (TRAINING_SET, SUB_MODEL):
        assert set(by_run(gql.materializations(asset), backfill_run["runId"])) == set(BACKFILLED), asset
    after_backfill = on_postgres.digests()
    backfilled = {PartitionKey.from_dagster(k) for k in BACKFILLED}
    assert {k for k in before if before[k] != after_backfill[k]} == backfilled  # refits: new files
    assert {k: v for k, v in after_backfill.items() if k not in backfilled} == {
        k: v for k, v in before.items() if k not in backfilled
    }

    # the range left the bundle behind the store: the sensor publishes it with a serving-only run, then rests
    serving = _settle(gql, backfill_run["startTime"], backfill_run["endTime"])
    assert all(r["tags"].get(SERVING_TAG) == "true" and r["status"] == "SUCCESS" for r in serving), serving
    assert len(serving) <= 1, serving

    # (c) edit one partition's labels: the daemon's sensor retrains exactly that partition
    before = on_postgres.digests()
    edited_at = time.time()
    assert scenarios.edit_rows(project.data, "2025-02", EDITED.cohort)
    tick = wait_for(
        lambda: next((t for t in _finished_ticks(gql, edited_at) if t["status"] != "SKIPPED"), None),
        TICK_TIMEOUT,
        "a sensor tick that requests a run after the edit",
    )
    assert tick["status"] == "SUCCESS" and tick["error"] is None and len(tick["runIds"]) == 1, tick
    run = gql.wait_run(tick["runIds"][0], RUN_TIMEOUT)
    assert run["status"] == "SUCCESS", f"{run}\n{on_postgres.server.log_tail()}"
    edited = EDITED.to_dagster()
    assert (run["tags"][RANGE_TAGS[0]], run["tags"][RANGE_TAGS[1]]) == (str(edited), str(edited))
    assert run["tags"]["retrain/reason"] == "edited_rows" and run["tags"][RETRAINING_TAG] == "churn"
    for asset in (TRAINING_SET, SUB_MODEL):
        assert set(by_run(gql.materializations(asset), run["runId"])) == {str(edited)}, asset
    sub_model = by_run(gql.materializations(SUB_MODEL), run["runId"])[str(edited)]["metadata"]
    assert sub_model["reason"] == "edited_rows" and sub_model["status"] == "trained"
    assert by_run(gql.materializations(BUNDLE), run["runId"]), "the bundle was republished"
    after = on_postgres.digests()
    assert {k for k in before if before[k] != after[k]} == {EDITED}
    # every other sub-model file is byte-identical (sha256) and at the same path
    assert {k: v for k, v in after.items() if k != EDITED} == {k: v for k, v in before.items() if k != EDITED}

    # what the server did is in PostgreSQL: the runs, the backfill, the sensor run's materializations
    statuses = dict(on_postgres.sql("SELECT run_id, status FROM runs"))
    for run_id in (backfill_run["runId"], run["runId"], *(r["runId"] for r in serving)):
        assert statuses[run_id] == "SUCCESS", run_id
    assert on_postgres.sql("SELECT key, status FROM bulk_actions") == [(backfill_id, backfill["status"])]
    rows = on_postgres.sql(
        "SELECT partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'"
        " AND asset_key = %s",
        (run["runId"], AssetKey(SUB_MODEL).to_string()),
    )
    assert rows == [(str(edited),)]
    # and the sensor is quiet again
    later = _settle(gql, run["startTime"], run["endTime"])
    assert later == [], [(r["runId"], r["status"], r["tags"]) for r in later]
