"""``retrain tick [--launch]``: one evaluation of the change sensor against the instance of ``DAGSTER_HOME``.

Without ``--launch`` it is a dry run: the sensor is evaluated on a copy of its state (in a
temporary folder) and its request log goes there too, so nothing is recorded and the next real
tick sees the same changes with the same reasons. A real tick whose requests are dropped would be
worse than nothing: it records what it saw, and the next tick asks again as ``retry``, after a
backoff, counted as an attempt.

``--launch`` is a real tick, as the daemon makes it: its state is committed, its dynamic
partition requests (new cohorts) are applied to the instance, and its run requests are executed
**in this process**, one run after the other, recorded on the instance with the request's tags,
run key and the sensor's name. In-process because that needs nothing else: no daemon, no code
location server (cron, CI, a laptop), and the cost measured for a run on this path is about a
second, against several seconds of process start-up per daemon-launched run (PITFALLS). It does
not use the instance's run launcher, queue or executor: where runs must go to Kubernetes or
Celery, turn the sensor on in the daemon instead of running ``retrain tick --launch``, and never
both at once (one evaluator of a retraining's sensor).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from retrain_plugins.cli.common import AddCommand, instance, load_retraining
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions, RunRequest

    from retrain_plugins.changes.request_log import Requested
    from retrain_plugins.partitions import PartitionKey

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class Evaluation(NamedTuple):
    """One tick: its run requests, skip message, new cohorts and, per request, its partitions' reasons."""

    sensor: str
    requests: list[RunRequest]
    skip_message: str | None
    added_cohorts: list[str]
    partitions: list[dict[PartitionKey, Requested]]  # per request, in order


def shadow_spec(spec: RetrainingSpec, scratch: Path) -> RetrainingSpec:
    """``spec`` with its sensor state under ``scratch`` (a copy of the real one), everything else as is.

    The state lives below ``data_dir``; so do the label glob and the default storage, which are
    therefore pinned to where they are now (the storage is read, never written, by a dry tick
    but for the request log, which :func:`request_logs_in` redirects).
    """
    from retrain_plugins.layout import state_path, storage

    shadow = spec.model_copy(
        update={
            "data_dir": scratch,
            "labels": spec.labels.model_copy(update={"path": spec.label_glob}),
            "store": spec.store.model_copy(update={"url": storage(spec).url}),
        }
    )
    source, target = state_path(spec).parent, state_path(shadow).parent
    target.mkdir(parents=True)
    if source.is_dir():
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith(f"{state_path(spec).name}-"):  # -wal, -shm: in the backup
                shutil.copy2(path, target / path.name)
    if state_path(spec).exists():  # a consistent snapshot even while the daemon writes (SQLite backup)
        with sqlite3.connect(state_path(spec)) as live, sqlite3.connect(state_path(shadow)) as copy:
            live.backup(copy)
    return shadow


def evaluate(defs: Definitions, spec: RetrainingSpec, instance: DagsterInstance, apply: bool) -> Evaluation:
    """Evaluate ``spec``'s change sensor once; ``apply``: record its asset events and dynamic
    partition requests on ``instance``, as the daemon does before it launches a tick's runs."""
    from dagster import AddDynamicPartitionsRequest, build_sensor_context

    from retrain_plugins.partitions import cohorts, decode_cohort

    name = f"{spec.name}_change_sensor"
    known = cohorts(spec, instance)
    context = build_sensor_context(
        instance=instance, definitions=defs, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    data = defs.resolve_sensor_def(name).evaluate_tick(context)
    if apply:  # what the daemon does with a tick's asset events (observations, check evaluations)
        for event in data.asset_events or []:
            instance.report_runless_asset_event(event)
    added = []
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            added += [decode_cohort(k) for k in request.partition_keys]
            if apply:  # what the daemon does with a tick's dynamic partition requests, before its runs
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        elif apply:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    requests = list(data.run_requests or [])
    seq = int(data.cursor) if requests and data.cursor else None
    return Evaluation(name, requests, data.skip_message, added, _members(spec, requests, seq, [*known, *added]))


def _members(
    spec: RetrainingSpec, requests: list[RunRequest], seq: int | None, order: list[str]
) -> list[dict[PartitionKey, Requested]]:
    """Per request, the partitions of its range with what the tick logged for them."""
    from retrain_plugins.changes.request_log import read_request_log
    from retrain_plugins.partitions import PartitionKey, windows

    logged = (read_request_log(spec, seq) if seq is not None else None) or {}
    window_keys = [w.key for w in windows(spec)]
    out: list[dict[PartitionKey, Requested]] = []
    for request in requests:
        if RANGE_START not in request.tags:  # a serving-only run: no partitions
            out.append({})
            continue
        start, end = (PartitionKey.from_dagster(request.tags[t]) for t in (RANGE_START, RANGE_END))
        w0, w1 = window_keys.index(start.window), window_keys.index(end.window)
        c0, c1 = order.index(start.cohort), order.index(end.cohort)
        out.append({
            key: found for key, found in sorted(logged.items())
            if w0 <= window_keys.index(key.window) <= w1 and key.cohort in order and c0 <= order.index(key.cohort) <= c1
        })
    return out


def describe(evaluation: Evaluation) -> list[str]:
    """The tick as lines: each request with its partitions, reasons and details."""
    from retrain_plugins.cli.table import render

    if not evaluation.requests:
        return [f"{evaluation.sensor}: no run requested: {evaluation.skip_message or '(no message)'}"]
    total = sum(len(p) for p in evaluation.partitions)
    lines = [f"{evaluation.sensor}: {total} partition(s) in {len(evaluation.requests)} run(s)"]
    if evaluation.added_cohorts:
        lines.append(f"new cohort partitions: {evaluation.added_cohorts}")
    for request, members in zip(evaluation.requests, evaluation.partitions):
        assets = ", ".join(key.path[-1] for key in request.asset_selection or [])
        if not members:
            lines.append(f"run {request.run_key}: serving only ({assets}): bundle.json is behind the model store")
            continue
        first, last = min(members), max(members)
        lines.append(f"run {request.run_key}: {len(members)} partition(s) {first} .. {last}; assets {assets}")
        table = render(("partition", "reason", "detail"), [(str(k), r.reason, r.detail) for k, r in members.items()])
        lines += ["  " + line for line in table.splitlines()]
    return lines


def launch(defs: Definitions, spec: RetrainingSpec, instance: DagsterInstance, evaluation: Evaluation) -> bool:
    """Execute the tick's requests in-process (see the module docstring); True if every run succeeded."""
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    from retrain_plugins.cli.runs import run_in_process

    ok = True
    for request, members in zip(evaluation.requests, evaluation.partitions):
        started = time.perf_counter()
        tags = {**request.tags, RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: evaluation.sensor}
        result = run_in_process(defs, spec, instance, selection=request.asset_selection, tags=tags, partitions=len(members))
        ok &= result.success
        outcome = "success" if result.success else "FAILED"
        print(f"run {result.run_id} ({request.run_key}): {outcome} in {time.perf_counter() - started:.1f} s", flush=True)
    return ok


def cmd_tick(args: argparse.Namespace) -> int:
    from retrain_plugins.dagster.definitions import build_definitions

    spec, resources = load_retraining(args)
    with instance() as dagster:
        if args.launch:
            defs = build_definitions(spec, resources=resources)
            evaluation = evaluate(defs, spec, dagster, apply=True)
            print("\n".join(describe(evaluation)), flush=True)
            return 0 if launch(defs, spec, dagster, evaluation) else 1
        from retrain_plugins.changes.request_log import request_logs_in
        from retrain_plugins.storage import Storage

        with tempfile.TemporaryDirectory(prefix="retrain-tick-") as scratch:
            shadow = shadow_spec(spec, Path(scratch))
            with request_logs_in(Storage(Path(scratch) / "requests")):
                evaluation = evaluate(build_definitions(shadow), shadow, dagster, apply=False)
                print("\n".join(describe(evaluation)))
        if evaluation.requests:
            print("dry run (a copy of the sensor's state; nothing recorded, nothing launched): `retrain tick --launch` runs them")
    return 0


def register(add: AddCommand) -> None:
    tick = add("tick", "Evaluate the change sensor once against $DAGSTER_HOME's instance; print its requests and why.", cmd_tick)
    tick.add_argument(
        "--launch", action="store_true",
        help="a real tick: record it, add new cohort partitions, and execute its runs in this process on the instance "
        "(print their run ids); without it, a dry run on a copy of the sensor's state",
    )
