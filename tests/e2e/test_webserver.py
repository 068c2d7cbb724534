"""Through the real webserver: what a user does in the Dagster UI, over the UI's own GraphQL.

A partition-range backfill of one cohort over two months becomes one run that materializes
exactly those partitions; the change sensor, started over GraphQL and ticked by the daemon,
answers an edit of one month's labels with one run that retrains exactly that partition, tagged
and recorded as ``edited_rows``.
"""

from __future__ import annotations

import time

from dagster_graphql.schema import create_schema
from graphql import parse, validate

from retrain_plugins.demo import scenarios

from .dagster_dev import BUNDLE, SUB_MODEL, TRAINING_SET
from .graphql import FINISHED_BACKFILL, FINISHED_RUN, QUERIES, RANGE_TAGS, wait_for
from .graphql import by_run as _by_run
from .graphql import latest as _latest

BACKFILL_TIMEOUT = 240.0  # the backfill daemon loops every 30 s; the run imports Feast and trains two partitions
RUN_TIMEOUT = 180.0
TICK_TIMEOUT = 90.0


def test_client_queries_are_valid_against_the_installed_dagster_schema():
    schema = create_schema().graphql_schema
    problems = {name: [e.message for e in validate(schema, parse(q))] for name, q in QUERIES.items()}
    assert {name: errs for name, errs in problems.items() if errs} == {}


def test_partition_range_backfill_materializes_exactly_the_range(served):
    gql = served.graphql
    keys = ["north|2025-01-01", "north|2025-02-01"]  # one cohort over two months (key strings: cohort|window)
    before = {name: _latest(gql.materializations(path)) for name, path in (("ts", TRAINING_SET), ("sm", SUB_MODEL))}
    assert set(before["sm"]) == {f"{c}|2025-0{m}-01" for c in ("east", "north", "south", "west") for m in (1, 2, 3)}

    backfill_id = gql.launch_range_backfill([TRAINING_SET, SUB_MODEL], keys[0], keys[-1], "e2e: north Jan-Feb")
    try:
        done = wait_for(
            lambda: (b := gql.backfill(backfill_id))["status"] in FINISHED_BACKFILL and b,
            BACKFILL_TIMEOUT,
            f"backfill {backfill_id} to finish",
            interval=1.0,
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {gql.backfill(backfill_id)}\n{served.server.log_tail()}") from None
    assert done["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, done
    assert done["error"] is None
    # single-run backfill policy: the whole rectangle is one run
    assert [r["status"] for r in done["runs"]] == ["SUCCESS"], done["runs"]
    run = gql.run(done["runs"][0]["runId"])
    assert (run["tags"][RANGE_TAGS[0]], run["tags"][RANGE_TAGS[1]]) == (keys[0], keys[-1])
    assert run["tags"]["dagster/backfill"] == backfill_id

    training_sets = _by_run(gql.materializations(TRAINING_SET), run["runId"])
    sub_models = _by_run(gql.materializations(SUB_MODEL), run["runId"])
    assert set(training_sets) == set(sub_models) == set(keys)  # exactly the range, nothing else
    for key in keys:
        ts, sm = training_sets[key]["metadata"], sub_models[key]["metadata"]
        assert sm["reason"] == "manual"  # a backfill started by hand
        assert sm["status"] == "trained"
        # unchanged data: the same training set as the full materialization, and the model saw it
        assert ts["fingerprint"] == sm["fingerprint"] == before["ts"][key]["metadata"]["fingerprint"]
        assert ts["rows"] == sm["rows"] == before["sm"][key]["metadata"]["rows"] > 0
        assert sm["auc_holdout"] is None or 0.0 <= sm["auc_holdout"] <= 1.0
    # every other partition keeps its earlier materialization
    after = _latest(gql.materializations(SUB_MODEL))
    assert {k: m["run_id"] for k, m in after.items() if k not in keys} == {
        k: m["run_id"] for k, m in before["sm"].items() if k not in keys
    }


def test_change_sensor_retrains_exactly_the_edited_partition(served):
    gql, location, sensor = served.graphql, served.location, served.sensor
    edited_key = "south|2025-02-01"
    before = _latest(gql.materializations(SUB_MODEL))
    assert gql.start_sensor(location, sensor) == "RUNNING"

    def first_tick() -> dict | None:
        done = [t for t in gql.sensor_ticks(location, sensor) if t["status"] != "STARTED"]
        return done[-1] if done else None

    tick = wait_for(first_tick, TICK_TIMEOUT, "the daemon's first tick of the change sensor")
    if tick["status"] == "SUCCESS":
        # The backfill before this test retrained its range without republishing the bundle: the
        # first tick publishes it with a serving-only run, and requests nothing else.
        (run_id,) = tick["runIds"]
        serving = wait_for(
            lambda: (r := gql.run(run_id))["status"] in FINISHED_RUN and r, RUN_TIMEOUT, "the serving run", interval=1.0
        )
        assert serving["tags"]["retrain/serving"] == "true" and serving["status"] == "SUCCESS", serving
        tick = wait_for(
            lambda: next((t for t in gql.sensor_ticks(location, sensor) if t["timestamp"] > tick["timestamp"]
                          and t["status"] != "STARTED"), None),
            TICK_TIMEOUT,
            "a sensor tick after the serving run",
        )  # fmt: skip
    assert tick["status"] == "SKIPPED", tick  # nothing changed since the full materialization
    assert tick["skipReason"].startswith("no partition changed"), tick
    assert tick["runIds"] == []

    edited_at_ms = time.time() * 1000
    assert scenarios.edit_rows(served.project.data, "2025-02", "south")

    def requesting_tick() -> dict | None:
        for t in gql.sensor_ticks(location, sensor):
            if t["timestamp"] * 1000 > edited_at_ms and t["status"] in {"SUCCESS", "FAILURE"}:
                return t
        return None

    tick = wait_for(requesting_tick, TICK_TIMEOUT, "a sensor tick after the edit")
    assert tick["status"] == "SUCCESS" and tick["error"] is None, tick
    assert len(tick["runIds"]) == 1, tick
    run = wait_for(
        lambda: (r := gql.run(tick["runIds"][0]))["status"] in FINISHED_RUN and r,
        RUN_TIMEOUT,
        "the sensor-driven run to finish",
        interval=1.0,
    )
    assert run["status"] == "SUCCESS", f"{run}\n{served.server.log_tail()}"
    assert run["tags"]["dagster/sensor_name"] == sensor
    assert (run["tags"][RANGE_TAGS[0]], run["tags"][RANGE_TAGS[1]]) == (edited_key, edited_key)
    assert run["tags"]["retrain/reason"] == "edited_rows"
    selected = [a["path"] for a in run["assetSelection"]]
    assert all(path in selected for path in (TRAINING_SET, SUB_MODEL, BUNDLE)), selected

    # exactly the edited partition was materialized by the sensor's run, for both partitioned assets
    training_sets = _by_run(gql.materializations(TRAINING_SET), run["runId"])
    sub_models = _by_run(gql.materializations(SUB_MODEL), run["runId"])
    assert set(training_sets) == set(sub_models) == {edited_key}
    ts, sm = training_sets[edited_key]["metadata"], sub_models[edited_key]["metadata"]
    assert sm["reason"] == "edited_rows"
    assert sm["status"] == "trained"
    old = before[edited_key]["metadata"]
    assert ts["fingerprint"] == sm["fingerprint"] != old["fingerprint"]  # new content, recorded by the model
    assert sm["rows"] == ts["rows"] == old["rows"]  # labels flipped, no rows added
    assert _by_run(gql.materializations(BUNDLE), run["runId"]), "the bundle was republished"
    # nothing else was materialized since the edit
    newer = [m["partition"] for m in gql.materializations(SUB_MODEL) if m["timestamp_ms"] > edited_at_ms]
    assert newer == [edited_key]

    # and the sensor is quiet again
    quiet = wait_for(
        lambda: next(
            (t for t in gql.sensor_ticks(location, sensor)
             if (run["endTime"] or 0) < t["timestamp"] and t["status"] != "STARTED"),
            None,
        ),
        TICK_TIMEOUT,
        "a sensor tick after the retraining run",
    )  # fmt: skip
    assert quiet["status"] == "SKIPPED", quiet
