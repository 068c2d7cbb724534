"""``retrain rollback``, ``verify`` and ``state rebuild``: keep the model store and the sensor's state healthy."""

from __future__ import annotations

import argparse

from retrain_plugins.cli.common import AddCommand, load_retraining, load_spec
from retrain_plugins.errors import StoreError


def cmd_rollback(args: argparse.Namespace) -> int:
    from retrain_plugins.bundle import publish
    from retrain_plugins.changes.detector import current_fingerprint, state_store
    from retrain_plugins.feast_view import load_feature_service_view
    from retrain_plugins.layout import model_store
    from retrain_plugins.mlflow import from_cli, mlflow_resource_key
    from retrain_plugins.partitions import PartitionKey

    spec, resources = load_retraining(args)
    # checked before anything changes; --mlflow, else the defs.yaml's `mlflow:`
    registry = from_cli(args.mlflow) or resources.get(mlflow_resource_key(spec))
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
    from retrain_plugins.changes.request_log import last_logged_seq
    from retrain_plugins.layout import model_store, state_path

    spec = load_spec(args)
    recorded, moved = rebuild_state(state_path(spec), model_store(spec), last_logged_seq(spec))
    if moved is not None:
        print(f"moved the old state store to {moved}")
    print(
        f"rebuilt {state_path(spec)}: {recorded} trained sub-model(s) from the model store; the next sensor tick "
        "re-reads the sources once and requests only partitions whose data differs from what their model saw"
    )
    return 0


def register(add: AddCommand) -> None:
    rollback = add("rollback", "Serve the previous version of one partition's sub-model again.", cmd_rollback)
    rollback.add_argument("window", help="window key, e.g. 2025-03-01")
    rollback.add_argument("cohort", help="cohort value, e.g. north")
    rollback.add_argument(
        "--to", metavar="SHA256", help="serve this kept version (sha256 or a prefix) instead of the previous one"
    )
    rollback.add_argument(
        "--mlflow", action="append", default=[], metavar="FIELD=VALUE",
        help="move the MLflow aliases too: the retraining's MLflowRegistryResource fields, repeated "
        "(tracking_uri=... required; registry_uri, experiment, sub_model_name, bundle_model_name, alias as configured); "
        "default: the defs.yaml's `mlflow:` attribute, if any",
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
