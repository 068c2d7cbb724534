"""``retrain`` subcommands (demo, apply, status, explain, savings, rollback, verify, predict). Exit code 0 on success, 1 on a known error (message on stderr), 2 on usage."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from retrain_plugins.errors import RetrainError, StoreError
from retrain_plugins.spec import RetrainingSpec

DEMO_SIZES = {"demo": 400, "small": 60}


def load_spec(args: argparse.Namespace) -> RetrainingSpec:
    """The spec in ``--spec``: a Dagster ``defs.yaml`` declaring a RetrainingComponent (what the
    code location loads), or a plain spec YAML."""
    import yaml

    path = Path(args.spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RetrainError(f"cannot read {path}: {exc}") from exc
    if isinstance(raw, dict) and "type" in raw and "attributes" in raw:
        from retrain_plugins.dagster.component import spec_from_defs_yaml

        return spec_from_defs_yaml(path)
    return RetrainingSpec.from_yaml(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from retrain_plugins.demo.generate import DemoConfig
    from retrain_plugins.demo.run import reset_data_dir, run_demo

    spec = load_spec(args)
    reset_data_dir(spec.data_dir)
    home = Path(os.environ.get("DAGSTER_HOME") or Path(spec.data_dir) / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():  # a local demo instance: no telemetry, no first-run banner
        instance_yaml.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    config = DemoConfig(n_customers=DEMO_SIZES[args.size], cohorts=spec.cohorts)
    with DagsterInstance.get() as instance:
        run_demo(spec, config, instance)
    print(f"\nDagster history is in DAGSTER_HOME={home}; `make dev` opens it in the UI.")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from retrain_plugins.feast_view import load_feature_service_view
    from retrain_plugins.feast_store import apply_feature_repo
    from retrain_plugins.validation import check_label_source

    spec = load_spec(args)
    apply_feature_repo(spec.feature_repo)
    view = load_feature_service_view(spec)
    check_label_source(spec, view)
    print(f"applied {spec.feature_repo}; feature service {view.service} version {view.version}: {view.feature_columns}")
    return 0


def _instance():
    """The Dagster instance of ``DAGSTER_HOME`` (where runs record what they trained), if set."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    from dagster import DagsterInstance

    return DagsterInstance.get()


def cmd_status(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import HEADERS, status_rows
    from retrain_plugins.cli.table import render

    print(render(HEADERS, status_rows(load_spec(args), _instance())))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from retrain_plugins.bundle import publish
    from retrain_plugins.changes.detector import current_fingerprint, state_store
    from retrain_plugins.feast_view import load_feature_service_view
    from retrain_plugins.layout import model_store
    from retrain_plugins.partitions import PartitionKey

    from retrain_plugins.mlflow import from_cli

    spec = load_spec(args)
    registry = from_cli(args.mlflow)  # checked before anything changes
    key = PartitionKey(args.window, args.cohort)
    entry = model_store(spec).rollback(key, to=args.to)
    state = state_store(spec)
    with state.transaction():
        state.record_trained(
            key, entry["fingerprint"], entry["rows"], "trained", "rollback", entry.get("definition", ""), entry.get("training_seconds")
        )
        # The data as it is now is served by this choice: the sensor must not undo it on its next
        # tick, only when the data changes again.
        state.acknowledge({key: current_fingerprint(spec, state, key)}, replace=False)
    bundle = publish(spec, load_feature_service_view(spec))
    print(f"{key}: serving {entry['path']} again (sha256 {entry['sha256'][:16]}, trained by run {entry.get('run_id')})")
    if registry is not None:
        done = registry.on_rollback(spec, key, entry, bundle)
        print(f"MLflow: alias {done['mlflow_alias']} -> {done['mlflow_model']} version {done['mlflow_version']}"
              + (f"; {done['mlflow_bundle_uri']} -> version {done['mlflow_bundle_version']}" if "mlflow_bundle_uri" in done else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from retrain_plugins.changes.state import StateStore
    from retrain_plugins.fallback import fallback_store
    from retrain_plugins.layout import model_store, state_path
    from retrain_plugins.verify import clean_store, verify_store

    spec = load_spec(args)
    ok = True
    if state_path(spec).exists():
        try:
            StateStore(state_path(spec)).check()  # every page of the change-detection state
        except StoreError as exc:
            print(f"problem: {exc}")
            ok = False
    for store in (model_store(spec), fallback_store(spec)):
        report = verify_store(store, grace_seconds=args.grace_seconds)
        ok &= report.ok
        print(f"{store.storage.uri()}: {report.checked} artifact(s) checked")
        old = set(report.old_orphans)
        for kind in ("corrupted", "missing", "orphans", "debris"):
            for item in getattr(report, kind):
                age = "" if kind != "orphans" else " (older than the grace period)" if item in old else " (young: kept)"
                print(f"  {kind}: {item}{age}")
        if args.clean:
            for item in clean_store(store, report):
                print(f"  removed {item}")
    if not ok:
        print("problems found: the change sensor requests corrupted or missing current sub-models (reason repair)")
    return 0 if ok else 1


def cmd_state(args: argparse.Namespace) -> int:
    from retrain_plugins.changes.rebuild import rebuild_state
    from retrain_plugins.layout import model_store, state_path

    spec = load_spec(args)
    recorded, moved = rebuild_state(state_path(spec), model_store(spec))
    if moved is not None:
        print(f"moved the old state store to {moved}")
    print(
        f"rebuilt {state_path(spec)}: {recorded} trained sub-model(s) from the model store; the next sensor tick "
        "re-reads the sources once and requests only partitions whose data differs from what their model saw"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import explain
    from retrain_plugins.partitions import PartitionKey

    print(explain(load_spec(args), PartitionKey(args.window, args.cohort), _instance()))
    return 0


def cmd_savings(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.status import savings
    from retrain_plugins.cli.table import render

    rows = savings(load_spec(args), _instance())
    headers = ("tick", "at", "requested", "retrained", "rejected", "failed/skipped/pending", "not retrained", "training s avoided", "reasons")
    print(render(headers, rows))
    print(f"total: {sum(r[3] for r in rows)} retrained, {sum(r[4] for r in rows)} rejected by the gate, "
          f"{sum(r[5] for r in rows)} failed, skipped or pending, {sum(r[6] for r in rows)} not retrained, "
          f"{sum(r[7] for r in rows):.1f} s of training avoided")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import polars as pl

    from retrain_plugins.cli.table import render
    from retrain_plugins.layout import model_store
    from retrain_plugins.routing import RoutedModel

    spec = load_spec(args)
    model = RoutedModel.load(model_store(spec).storage)
    if args.entities or args.entity:
        from retrain_plugins.feast_store import feature_store
        from retrain_plugins.online import online_frame

        entities = _entities(spec, args)
        cohorts = args.cohorts.split(",") if args.cohorts else None
        if cohorts is not None and len(cohorts) != len(entities):
            raise RetrainError(f"--cohorts lists {len(cohorts)} cohorts for {len(entities)} entities")
        frame = online_frame(spec, feature_store(str(spec.feature_repo)), entities, cohorts)
    elif args.input:
        frame = pl.read_parquet(args.input)
    else:
        raise RetrainError("predict needs --input rows.parquet, --entities id,id,... or --entity key=value,...")
    scored = model.predict(frame, timestamp_column=args.timestamp_column)
    if args.output:
        scored.write_parquet(args.output)
        print(f"wrote {scored.height} predictions to {args.output}")
    else:
        columns = [c for c in dict.fromkeys([*spec.labels.key_columns, spec.labels.cohort_column]) if c in scored.columns]
        print(render([*columns, "served_by", "route", "prediction"], scored.select([*columns, "served_by", "route", "prediction"]).head(50).rows()))
    return 0


def _entities(spec: RetrainingSpec, args: argparse.Namespace) -> list[dict]:
    """``--entities 1,2`` (one join key) or ``--entity k=v,k2=v2`` (repeated), typed like the label source."""
    from retrain_plugins.sql import connect, parquet

    lab = spec.labels
    described = connect(spec.label_glob).execute(f"DESCRIBE SELECT * FROM {parquet('p')}", {"p": spec.label_glob}).fetchall()
    numeric = {name for name, dtype, *_ in described if dtype.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "U", "HUGEINT"))}
    floating = {name for name, dtype, *_ in described if dtype.startswith(("FLOAT", "DOUBLE", "DECIMAL"))}

    def typed(field: str, text: str):
        column = lab.keys.get(field, field)
        return int(text) if column in numeric else float(text) if column in floating else text

    if args.entities:
        if len(lab.keys) != 1:
            raise RetrainError(f"the feature service joins on {list(lab.keys)}: give each entity as --entity " + ",".join(f"{k}=..." for k in lab.keys))
        (key,) = lab.keys
        return [{key: typed(key, e)} for e in args.entities.split(",")]
    entities = []
    for given in args.entity:
        pairs = [part.split("=", 1) for part in given.split(",")]
        if any(len(p) != 2 for p in pairs):
            raise RetrainError(f"--entity {given!r}: expected key=value,key=value")
        entities.append({k: typed(k, v) for k, v in pairs})
    return entities


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="retrain", description="Partial retraining of per-segment models.")
    sub = top.add_subparsers(dest="command", required=True)
    default_spec = os.environ.get("RETRAIN_SPEC")

    def add(name: str, help_: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--spec",
            default=default_spec,
            required=default_spec is None,
            help="retraining spec YAML (default: $RETRAIN_SPEC)",
        )
        p.set_defaults(fn=fn)
        return p

    demo = add("demo", "From an empty data/: generate, apply, full run, one change, sensor tick, partial run, report.", cmd_demo)
    demo.add_argument("--size", choices=sorted(DEMO_SIZES), default="demo", help="customers per cohort")
    add("apply", "feast apply the spec's repo and check the label source against the spec.", cmd_apply)
    add("status", "Every partition with its state, rows, holdout AUC and last reason.", cmd_status)
    explain = add("explain", "Why one partition was or was not retrained.", cmd_explain)
    explain.add_argument("window", help="window key, e.g. 2025-03-01")
    explain.add_argument("cohort", help="cohort value, e.g. north")
    rollback = add("rollback", "Serve the previous version of one partition's sub-model again.", cmd_rollback)
    rollback.add_argument("window", help="window key, e.g. 2025-03-01")
    rollback.add_argument("cohort", help="cohort value, e.g. north")
    rollback.add_argument(
        "--to", metavar="SHA256", help="serve this kept version (sha256 or a prefix) instead of the previous one"
    )
    rollback.add_argument(
        "--mlflow", action="append", default=[], metavar="FIELD=VALUE",
        help="move the MLflow aliases too: the retraining's MLflowRegistryResource fields, repeated "
        "(tracking_uri=... required; registry_uri, experiment, sub_model_name, bundle_model_name, alias as configured)",
    )
    verify = add("verify", "Check the model store against its records (checksums, missing, orphans).", cmd_verify)
    verify.add_argument(
        "--clean", action="store_true",
        help="delete temp files left by interrupted writes and orphan artifacts older than the grace period",
    )
    verify.add_argument(
        "--grace-seconds", type=float, default=3600.0,
        help="age an artifact no record names must reach before --clean deletes it (default: 3600)",
    )
    state = add("state", "Manage the sensor's state store.", cmd_state)
    state.add_argument("action", choices=["rebuild"], help="rebuild: move the store aside and rebuild it from the model store")
    add("savings", "The savings ledger: partitions skipped and training time avoided per update.", cmd_savings)
    predict = add("predict", "Score a parquet file through the routed model.", cmd_predict)
    predict.add_argument("--input", help="parquet with the cohort column and the features (batch)")
    predict.add_argument("--entities", help="comma-separated entity ids (one join key): features from Feast's online store")
    predict.add_argument(
        "--entity", action="append", default=[],
        help="one entity as key=value,... (every join key, plus request-time label columns); repeat per entity",
    )
    predict.add_argument("--cohorts", help="comma-separated cohort per entity (for entities without label rows)")
    predict.add_argument("--output", help="parquet to write (default: print the first rows)")
    predict.add_argument("--timestamp-column", help="route each row by its time to that window's sub-model")
    return top


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Library deprecation chatter (ibis inside Feast, Dagster betas) is not for a CLI's readers.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except RetrainError as exc:
        print(f"retrain {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:  # a store or file the library did not expect to fail
        print(f"retrain {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
