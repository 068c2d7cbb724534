"""The GraphQL calls the Dagster UI makes (``POST /graphql``), as a small typed client.

Every query is a module constant in :data:`QUERIES`, so a test can validate them all against the
installed Dagster's schema without a server. Every wait is bounded: :func:`wait_for` polls until
a deadline and fails naming what it waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

REPOSITORY = "__repository__"  # the repository name of a code location built from a Definitions object
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

PING = "{ version }"

LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""

LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on Error { message } } }"""

BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions error { message } runs(limit: 20) { runId status } }
  ... on Error { message } } }"""

MATERIALIZATIONS = """query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { __typename
  ... on Asset { assetMaterializations(partitions: $partitions) { partition runId timestamp metadataEntries {
    __typename label
    ... on IntMetadataEntry { intValue intRepr }
    ... on FloatMetadataEntry { floatValue }
    ... on TextMetadataEntry { text }
    ... on JsonMetadataEntry { jsonString }
    ... on PathMetadataEntry { path }
    ... on BoolMetadataEntry { boolValue } } } }
  ... on Error { message } } }"""

START_SENSOR = """mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on Error { message } } }"""

SENSOR_TICKS = """query($selector: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status ticks(limit: $limit) {
    tickId status timestamp endTimestamp skipReason runIds error { message } } } }
  ... on Error { message } } }"""

RUN = """query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { runId status startTime endTime tags { key value } assetSelection { path } }
  ... on Error { message } } }"""

PARTITION_STATS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { __typename
  ... on AssetNode { partitionStats { numPartitions numMaterialized numFailed numMaterializing } }
  ... on Error { message } } }"""

INSTANCE = """{ instance { runLauncher { name } runQueuingSupported
  runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml } } }"""

SET_NUX_SEEN = "mutation { setNuxSeen }"  # what the UI sends when the "Join the community" dialog is dismissed

QUERIES = {
    "PING": PING,
    "LOCATIONS": LOCATIONS,
    "DAEMONS": DAEMONS,
    "LAUNCH_BACKFILL": LAUNCH_BACKFILL,
    "LAUNCH_RUN": LAUNCH_RUN,
    "BACKFILL": BACKFILL,
    "MATERIALIZATIONS": MATERIALIZATIONS,
    "START_SENSOR": START_SENSOR,
    "SENSOR_TICKS": SENSOR_TICKS,
    "RUN": RUN,
    "PARTITION_STATS": PARTITION_STATS,
    "INSTANCE": INSTANCE,
    "SET_NUX_SEEN": SET_NUX_SEEN,
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def by_run(materializations: list[dict], run_id: str) -> dict[str, dict]:
    """The materializations ``run_id`` made, by partition (from :meth:`GraphQL.materializations`)."""
    return {m["partition"]: m for m in materializations if m["run_id"] == run_id}


def latest(materializations: list[dict]) -> dict[str, dict]:
    """The newest materialization of each partition."""
    newest: dict[str, dict] = {}
    for m in materializations:
        if m["partition"] not in newest or m["timestamp_ms"] > newest[m["partition"]]["timestamp_ms"]:
            newest[m["partition"]] = m
    return newest


class GraphQLError(RuntimeError):
    """The server answered with GraphQL errors or with an error type."""


def metadata_values(entries: Sequence[dict]) -> dict[str, Any]:
    """Metadata entries as plain Python values, keyed by label."""
    out: dict[str, Any] = {}
    for e in entries:
        kind = e["__typename"]
        if kind == "IntMetadataEntry":
            out[e["label"]] = e["intValue"] if e["intValue"] is not None else int(e["intRepr"])
        elif kind == "JsonMetadataEntry":
            out[e["label"]] = json.loads(e["jsonString"])
        else:
            field = {"FloatMetadataEntry": "floatValue", "TextMetadataEntry": "text", "PathMetadataEntry": "path",
                     "BoolMetadataEntry": "boolValue"}.get(kind)  # fmt: skip
            out[e["label"]] = e[field] if field else kind
    return out


def _check(data: dict, expected: str) -> dict:
    if data["__typename"] != expected:
        raise GraphQLError(f"expected {expected}, got {data['__typename']}: {data.get('message')}")
    return data


class GraphQL:
    """Queries and mutations against one webserver."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.endpoint = f"{base_url}/graphql"
        self.timeout = timeout

    def execute(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(self.endpoint, json={"query": query, "variables": variables or {}}, timeout=self.timeout)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"])[:2000])
        return body["data"]

    def ping(self) -> bool:
        try:
            return bool(self.execute(PING)["version"])
        except (requests.RequestException, GraphQLError, ValueError):
            return False

    def location_entries(self) -> list[dict]:
        return self.execute(LOCATIONS)["workspaceOrError"].get("locationEntries", [])

    def daemon_statuses(self) -> list[dict]:
        return self.execute(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]

    def launch_range_backfill(self, asset_paths: Sequence[Sequence[str]], start: str, end: str, title: str) -> str:
        """``launchPartitionBackfill`` of the partition range ``start..end`` of each asset; the backfill id."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": list(path)}, "partitions": {"range": {"start": start, "end": end}}}
                for path in asset_paths
            ],
            "title": title,
        }
        data = self.execute(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        return _check(data, "LaunchBackfillSuccess")["backfillId"]

    def launch_backfill_all(
        self, asset_paths: Sequence[Sequence[str]], title: str, tags: dict[str, str] | None = None
    ) -> str:
        """``launchPartitionBackfill`` of every partition of the assets (what the UI sends for "all
        partitions" of a selection, partitioned or not: ``assetSelection`` + ``allPartitions``)."""
        params = {
            "assetSelection": [{"path": list(path)} for path in asset_paths],
            "allPartitions": True,
            "title": title,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        data = self.execute(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        return _check(data, "LaunchBackfillSuccess")["backfillId"]

    def launch_run(
        self, location: str, job: str, asset_paths: Sequence[Sequence[str]], tags: dict[str, str] | None = None
    ) -> str:
        """``launchRun`` of ``asset_paths`` in ``job`` with ``tags`` (the UI's launch of one run); the run id.

        With the partition range tags (``dagster/asset_partition_range_start``/``_end``) this is
        one run over the whole range, as the UI's "launch as single run" sends it.
        """
        params = {
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": REPOSITORY,
                "jobName": job,
                "assetSelection": [{"path": list(path)} for path in asset_paths],
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        data = self.execute(LAUNCH_RUN, {"params": params})["launchRun"]
        return _check(data, "LaunchRunSuccess")["run"]["runId"]

    def backfill(self, backfill_id: str) -> dict:
        return _check(self.execute(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"], "PartitionBackfill")

    def materializations(self, asset_path: Sequence[str], partitions: Sequence[str] | None = None) -> list[dict]:
        """Materializations of the asset (of ``partitions`` if given), newest first, metadata as values."""
        variables = {"key": {"path": list(asset_path)}, "partitions": list(partitions) if partitions else None}
        data = _check(self.execute(MATERIALIZATIONS, variables)["assetOrError"], "Asset")
        return [
            {
                "partition": m["partition"],
                "run_id": m["runId"],
                "timestamp_ms": int(m["timestamp"]),
                "metadata": metadata_values(m["metadataEntries"]),
            }
            for m in data["assetMaterializations"]
        ]

    def partition_stats(self, asset_path: Sequence[str]) -> dict[str, int]:
        """What the UI counts: numPartitions, numMaterialized, numFailed, numMaterializing."""
        data = self.execute(PARTITION_STATS, {"key": {"path": list(asset_path)}})["assetNodeOrError"]
        return _check(data, "AssetNode")["partitionStats"]

    @staticmethod
    def _sensor(location: str, sensor: str) -> dict:
        return {"selector": {"repositoryName": REPOSITORY, "repositoryLocationName": location, "sensorName": sensor}}

    def start_sensor(self, location: str, sensor: str) -> str:
        """``startSensor``; the sensor's status afterwards."""
        data = _check(self.execute(START_SENSOR, self._sensor(location, sensor))["startSensor"], "Sensor")
        return data["sensorState"]["status"]

    def sensor_ticks(self, location: str, sensor: str, limit: int = 20) -> list[dict]:
        """The sensor's ticks, newest first: status, skip reason, run ids, error."""
        variables = {**self._sensor(location, sensor), "limit": limit}
        data = _check(self.execute(SENSOR_TICKS, variables)["sensorOrError"], "Sensor")
        return data["sensorState"]["ticks"]

    def finished_ticks(self, location: str, sensor: str, after: float) -> list[dict]:
        """The sensor's finished ticks that started after ``after`` (epoch seconds), oldest first."""
        ticks = self.sensor_ticks(location, sensor, limit=100)
        return sorted((t for t in ticks if t["timestamp"] > after and t["status"] != "STARTED"), key=lambda t: t["timestamp"])

    def settle(self, location: str, sensor: str, since: float, quiet_after: float, timeout: float, run_timeout: float) -> list[dict]:
        """Wait for the sensor to rest: a SKIPPED tick after ``quiet_after`` and after the end of every
        run its ticks since ``since`` launched (each waited for). Returns those runs; a FAILURE tick
        fails."""
        runs: list[dict] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout + 2 * run_timeout
        while time.monotonic() < deadline:
            for t in self.finished_ticks(location, sensor, since):
                assert t["status"] in {"SKIPPED", "SUCCESS"}, t
                if t["status"] == "SKIPPED" and t["timestamp"] > quiet_after:
                    return runs
                for run_id in t["runIds"]:
                    if run_id not in seen:
                        seen.add(run_id)
                        runs.append(run := self.wait_run(run_id, run_timeout))
                        quiet_after = max(quiet_after, run["endTime"] or time.time())
            time.sleep(1.0)
        raise TimeoutError(f"the sensor {sensor} did not rest (no SKIPPED tick after {quiet_after}) within the deadline")

    def wait_run(self, run_id: str, timeout: float) -> dict:
        """:meth:`run` once it has finished (success, failure or canceled)."""
        return wait_for(
            lambda: (r := self.run(run_id))["status"] in FINISHED_RUN and r, timeout, f"run {run_id} to finish", interval=1.0
        )

    def wait_backfill(self, backfill_id: str, timeout: float) -> dict:
        """:meth:`backfill` once it has finished."""
        return wait_for(
            lambda: (b := self.backfill(backfill_id))["status"] in FINISHED_BACKFILL and b,
            timeout,
            f"backfill {backfill_id} to finish",
            interval=1.0,
        )

    def instance(self) -> dict:
        """The served instance: its run launcher's name and the run queue's config."""
        return self.execute(INSTANCE)["instance"]

    def run(self, run_id: str) -> dict:
        """One run: status, start/end time, tags (as a dict), asset selection."""
        data = _check(self.execute(RUN, {"id": run_id})["runOrError"], "Run")
        return {**data, "tags": {t["key"]: t["value"] for t in data["tags"]}}
