"""The end-to-end demo: generate, apply, full run, one change, one tick, partial run, report."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from dagster import DagsterInstance

from retrain_plugins.changes.detector import state_store
from retrain_plugins.cli.table import render
from retrain_plugins.dagster.definitions import build_definitions
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.dagster.tags import REASONS_TAG
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import DemoConfig, generate
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.feast_store import apply_feature_repo
from retrain_plugins.layout import model_store
from retrain_plugins.partitions import all_partitions
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.validation import check_label_source

GENERATED = ("sources", "feast", "models", "state", "training_sets", "dagster_home")


class DemoResult(NamedTuple):
    full_seconds: float
    partial_seconds: float
    retrained: list[str]
    table: str


def reset_data_dir(data_dir: Path) -> None:
    """Remove everything the demo generates under ``data_dir`` (keeps tracked files such as README)."""
    for name in GENERATED:
        shutil.rmtree(Path(data_dir) / name, ignore_errors=True)


def run_demo(
    spec: RetrainingSpec,
    config: DemoConfig,
    instance: DagsterInstance,
    scenario: tuple[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the whole story on ``spec.data_dir`` (which must hold no generated data yet)."""
    data_dir = Path(spec.data_dir)
    say(f"1/6 generating demo data ({config.n_customers} customers x {len(config.cohorts)} cohorts, {config.months} months) in {data_dir / 'sources'}")
    generate(data_dir, config)
    say(f"2/6 feast apply {spec.feature_repo}")
    apply_feature_repo(spec.feature_repo)
    check_label_source(spec, load_feature_service_view(spec))
    defs = build_definitions(spec)
    partitions = all_partitions(spec)
    say(f"3/6 materializing all {len(partitions)} partitions (one run, single-run backfill policy)")
    started = time.perf_counter()
    materialize_all(defs, spec, instance, log_level="WARNING")
    full_seconds = time.perf_counter() - started
    sensor = f"{spec.name}_change_sensor"
    baseline = tick(defs, sensor, instance)
    if baseline.run_requests:
        raise RuntimeError(f"sensor requested runs right after a full materialization: {baseline.run_requests}")
    before = model_store(spec).entries()
    window, cohort = scenario or (partitions[len(partitions) // 2].window[:7], spec.cohorts[0])
    say(f"4/6 scenario: edit 25% of the labels of cohort {cohort!r} in month {window}")
    scenarios.edit_rows(data_dir, window, cohort)
    say("5/6 sensor tick + the runs it requested")
    started = time.perf_counter()
    result = tick(defs, sensor, instance)
    execute(defs, spec, result.run_requests, instance, log_level="WARNING")
    partial_seconds = time.perf_counter() - started
    reasons: dict[str, str] = {}
    for request in result.run_requests:
        reasons.update(json.loads(request.tags.get(REASONS_TAG, "{}")))
    after = model_store(spec).entries()
    trained = state_store(spec).trained()
    rows = []
    for key in partitions:
        old, new = before.get(key), after.get(key)
        changed = (old or {}).get("sha256") != (new or {}).get("sha256")
        outcome = "RETRAINED" if changed else "cached"
        if str(key) in reasons and not changed:
            record = trained.get(key)
            outcome = f"{record.status.upper()} (current kept)" if record else "not trained"
        rows.append(
            (
                key.window,
                key.cohort,
                outcome,
                reasons.get(str(key), "-"),
                (new or {}).get("rows"),
                (new or {}).get("auc_holdout"),
            )
        )
    table = render(("window", "cohort", "sub-model", "reason", "rows", "auc_holdout"), rows)
    retrained = [str(k) for k in partitions if str(k) in reasons]
    say("6/6 result\n" + table)
    say(
        render(
            ("update", "partitions", "wall seconds", "share of full"),
            [
                ("initial full run", len(partitions), round(full_seconds, 2), "100%"),
                ("partial (tick + runs)", len(retrained), round(partial_seconds, 2), f"{100 * partial_seconds / full_seconds:.1f}%"),
            ],
        )
    )
    return DemoResult(full_seconds, partial_seconds, retrained, table)
