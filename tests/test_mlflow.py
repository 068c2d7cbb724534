"""MLflow registry (retrain_plugins.mlflow) against a real local tracking store: SQLite backend, file
artifact store under tmp, no server. One project is materialized with the resource attached for the
module; the tests run in file order, and two change it (a sensor update, then a rollback; the
last one through a defs.yaml's `mlflow:` attribute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, EnvVar

from retrain_plugins import RetrainingSpec, apply_feature_repo, build_definitions
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import DemoConfig, generate
from retrain_plugins.demo.project import copy_feature_repo
from retrain_plugins.errors import RetrainError
from retrain_plugins.layout import model_store
from retrain_plugins.mlflow import MLflowRegistryResource, from_cli, mlflow_resource_key
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import RoutedModel

from .helpers import COHORTS, make_spec

mlflow = pytest.importorskip("mlflow")  # the extra is part of the dev environment (make env syncs --all-extras)

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = PartitionKey("2025-02-01", "north")
SUB_MODELS, ROUTED = "churn_sub_models", "churn_routed"
URI_VAR = "RETRAIN_TEST_MLFLOW_TRACKING_URI"


class Registered(NamedTuple):
    root: Path
    spec: RetrainingSpec
    defs: object
    instance: DagsterInstance
    uri: str
    client: object  # MlflowClient on ``uri``

    def versions(self, name: str = SUB_MODELS) -> list:
        return sorted(self.client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))

    def aliases(self, name: str = SUB_MODELS) -> dict[str, str]:
        return self.client.get_registered_model(name).aliases


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Registered:
    """A project materialized once (3 months x 4 cohorts) with ``churn_mlflow`` attached."""
    base = tmp_path_factory.mktemp("mlflow")
    root = base / "project"
    root.mkdir()
    copy_feature_repo(REPO_ROOT / "feature_repo", root)
    generate(root / "data", DemoConfig(n_customers=60, months=3, cohorts=COHORTS))
    spec = make_spec(root)
    apply_feature_repo(spec.feature_repo, in_process=True)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    os.environ[URI_VAR] = uri  # as a deployment passes it: resolved by Dagster when a run starts
    resource = MLflowRegistryResource(tracking_uri=EnvVar(URI_VAR), artifact_location=str(base / "mlflow-artifacts"))
    defs = build_definitions(spec, resources={mlflow_resource_key(spec): resource})
    instance = DagsterInstance.ephemeral()
    try:
        assert materialize_all(defs, spec, instance).success
        yield Registered(root, spec, defs, instance, uri, mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri))
    finally:
        instance.dispose()
        del os.environ[URI_VAR]


def test_materialize_registers_each_sub_model_with_lineage_and_points_its_alias(registered):
    entries = model_store(registered.spec).entries()
    versions = registered.versions()
    assert len(versions) == len(entries) == 12  # one version per sub-model, one registered model
    by_partition = {v.tags["partition"]: v for v in versions}
    assert set(by_partition) == {str(k) for k in entries}
    aliases = registered.aliases()
    for key, entry in entries.items():
        version = by_partition[str(key)]
        assert version.tags["sha256"] == entry["sha256"]
        assert (version.tags["window"], version.tags["cohort"]) == (key.window, key.cohort)
        assert version.tags["fingerprint"] == entry["fingerprint"]
        assert aliases[f"champion-{key.window}-{key.cohort}"] == version.version
    entry = entries[KEY]
    run = registered.client.get_run(by_partition[str(KEY)].run_id)
    assert run.data.params["trainer_params.iterations"] == "25" and run.data.params["trainer"] == "catboost"
    assert run.data.params["feature_service"] == "churn_model_v1"
    assert run.data.params["feature_service_version"] == entry["feature_service_version"]
    assert run.data.metrics["auc_holdout"] == entry["auc_holdout"] and run.data.metrics["rows"] == entry["rows"]
    import catboost
    import sklearn

    assert run.data.tags["library.catboost"] == catboost.__version__
    assert run.data.tags["library.scikit-learn"] == sklearn.__version__
    assert run.data.tags["library.retrain-plugins"] == "0.1.0"
    assert run.data.tags["reason"] == entry["reason"] and run.data.tags["dagster_run_id"] == entry["run_id"]
    # the logged artifact is the store's file, byte for byte
    serving = registered.client.get_model_version_by_alias(SUB_MODELS, "champion-2025-02-01-north")
    (artifact,) = (Path(serving.source) / "artifacts").iterdir()  # a file artifact store: a local folder
    assert artifact.read_bytes() == model_store(registered.spec).path_of(entry).read_bytes()
    # the routed bundle: one version, the alias on it
    (bundle,) = registered.versions(ROUTED)
    assert registered.aliases(ROUTED) == {"champion": bundle.version}
    # and Dagster shows where each sub-model went
    records = registered.instance.fetch_materializations(AssetKey(["churn", "sub_model"]), limit=100).records
    metadata = {r.partition_key: r.asset_materialization.metadata for r in records}
    assert {m["mlflow_version"].value for m in metadata.values()} == {int(v.version) for v in versions}
    bundle_event = registered.instance.get_latest_materialization_event(AssetKey(["churn", "model_bundle"]))
    shown = bundle_event.asset_materialization.metadata
    assert shown["mlflow_bundle_uri"].value == f"models:/{ROUTED}@champion"
    assert shown["mlflow_bundle_version"].value == int(bundle.version)
    assert shown["mlflow_sub_models_logged_now"].value == 0  # the training step had registered them all


PREDICT = """
import sys
import mlflow.pyfunc, pandas as pd, numpy as np
frame = pd.read_parquet(sys.argv[1])
routed = mlflow.pyfunc.load_model("models:/churn_routed@champion")
out = routed.predict(frame)
timed = routed.predict(frame, params={"timestamp_column": "label_timestamp"})
sub = mlflow.pyfunc.load_model("models:/churn_sub_models@champion-2025-03-01-north")
north = frame[frame["region"] == "north"]
pd.DataFrame({"prediction": out["prediction"], "served_by": out["served_by"], "timed": timed["prediction"],
              "timed_by": timed["served_by"]}).to_parquet(sys.argv[2])
np.save(sys.argv[3], np.asarray(sub.predict(north)))
"""


def test_routed_pyfunc_predicts_exactly_what_the_routed_model_does_in_a_fresh_process_without_the_store(registered, tmp_path):
    spec = registered.spec
    store = model_store(spec)
    routed = RoutedModel.load(store.storage)
    frame = pl.concat(
        [pl.read_parquet(p) for p in sorted((registered.root / "data" / "training_sets" / "churn").glob("*/*.parquet"))],
        how="diagonal_relaxed",
    ).select(["label_timestamp", "region", *routed.features])
    unseen = frame.head(3).with_columns(pl.lit("atlantis").alias("region"))  # served by the fallback
    frame = pl.concat([frame, unseen])
    expected = routed.predict(frame)
    expected_timed = routed.predict(frame, timestamp_column="label_timestamp")
    north = frame.filter(pl.col("region") == "north").select(routed.features)
    entry = store.entries()[PartitionKey("2025-03-01", "north")]
    expected_north = routed._trainer.predict(routed._trainer.load(store.path_of(entry)), north)
    # MLflow's signature takes timezone-naive datetimes only: the pyfunc reads naive times as UTC
    frame.with_columns(pl.col("label_timestamp").dt.replace_time_zone(None)).write_parquet(tmp_path / "rows.parquet")

    models = registered.root / "data" / "models"
    models.rename(registered.root / "data" / "models.away")  # the store is gone: MLflow's copy serves
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": registered.uri, "MLFLOW_REGISTRY_URI": registered.uri}
        args = [str(tmp_path / "rows.parquet"), str(tmp_path / "out.parquet"), str(tmp_path / "north.npy")]
        done = subprocess.run(
            [sys.executable, "-c", PREDICT, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    finally:
        (registered.root / "data" / "models.away").rename(models)
    assert done.returncode == 0, done.stderr[-3000:]
    got = pl.read_parquet(tmp_path / "out.parquet")
    assert np.array_equal(got["prediction"].to_numpy(), expected["prediction"].to_numpy())  # exactly
    assert got["served_by"].to_list() == expected["served_by"].to_list()
    assert expected["served_by"].to_list()[-3:] == ["fallback"] * 3
    assert np.array_equal(got["timed"].to_numpy(), expected_timed["prediction"].to_numpy())
    assert got["timed_by"].to_list() == expected_timed["served_by"].to_list()
    assert np.array_equal(np.load(tmp_path / "north.npy"), expected_north)


def test_a_sensor_update_registers_only_its_partition_and_rollback_moves_the_alias_back(registered, capsys):
    from retrain_plugins.cli.main import main

    project = registered
    sensor = f"{project.spec.name}_change_sensor"
    assert tick(project.defs, sensor, project.instance).run_requests == []
    before, aliases_before = project.versions(), project.aliases()
    bundles_before = project.versions(ROUTED)
    alias = "champion-2025-02-01-north"
    old = aliases_before[alias]

    scenarios.edit_rows(project.root / "data", "2025-02", "north")
    requested = tick(project.defs, sensor, project.instance)
    assert len(requested.run_requests) == 1
    assert all(r.success for r in execute(project.defs, project.spec, requested.run_requests, project.instance))

    after = project.versions()
    new = [v for v in after if v.version not in {b.version for b in before}]
    assert [v.tags["partition"] for v in new] == [str(KEY)]  # exactly the updated partition
    assert new[0].tags["reason"] == "edited_rows"
    assert new[0].tags["sha256"] == model_store(project.spec).entries()[KEY]["sha256"]
    aliases = project.aliases()
    assert aliases[alias] == new[0].version != old
    assert {k: v for k, v in aliases.items() if k != alias} == {k: v for k, v in aliases_before.items() if k != alias}
    bundles = project.versions(ROUTED)
    assert len(bundles) == len(bundles_before) + 1 and project.aliases(ROUTED)["champion"] == bundles[-1].version

    spec_file = project.root / "spec.json"
    spec_file.write_text(project.spec.model_dump_json())
    code = main(["rollback", KEY.window, KEY.cohort, "--spec", str(spec_file), "--mlflow", f"tracking_uri={project.uri}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"MLflow: alias {alias} -> {SUB_MODELS} version {old}" in out
    assert project.aliases()[alias] == old  # back on the version that serves again
    assert len(project.versions()) == len(after)  # nothing new logged: the old version is found by sha256
    rolled = project.versions(ROUTED)
    assert len(rolled) == len(bundles) + 1 and project.aliases(ROUTED)["champion"] == rolled[-1].version
    routed_versions = json.loads(
        Path(project.client.download_artifacts(rolled[-1].run_id, "routed_versions.json", str(project.root))).read_text()
    )
    assert routed_versions["versions"][str(KEY)] == int(old)


IMPORTS = """
import sys
from dagster import DagsterInstance, materialize
from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.mlflow import MLflowRegistryResource
import retrain_plugins.cli.main
from retrain_plugins.dagster.execution import retraining_assets
spec = RetrainingSpec.model_validate_json(open(sys.argv[1]).read())
attached = build_definitions(spec, resources={"churn_mlflow": MLflowRegistryResource(tracking_uri="sqlite:///x.db")})
defs = build_definitions(spec)
assert materialize(retraining_assets(defs, spec, "model_bundle"), instance=DagsterInstance.ephemeral(), resources=defs.resources).success
print(sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")))
"""


def test_mlflow_is_never_imported_without_the_resource(registered, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(registered.spec.model_dump_json())
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS, str(spec_file)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_partition_aliases_are_valid_mlflow_aliases_and_unique():
    resource = MLflowRegistryResource(tracking_uri="sqlite:///x.db")
    assert resource.partition_alias(PartitionKey("2025-02-01", "north")) == "champion-2025-02-01-north"
    odd = [resource.partition_alias(PartitionKey("2025-02-01", c)) for c in ("São Paulo", "São/Paulo", "x" * 300)]
    assert len(set(odd)) == 3 and all(len(a) <= 255 for a in odd)
    assert all(set(a) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-ã") for a in odd)


def test_cli_settings_and_resource_keys_are_checked(registered):
    assert from_cli([]) is None
    assert from_cli(["tracking_uri=sqlite:///a.db", "alias=prod"]).alias == "prod"
    with pytest.raises(RetrainError, match="tracking_uri"):
        from_cli(["alias=prod"])
    with pytest.raises(RetrainError, match="field one of"):
        from_cli(["tracking=sqlite:///a.db"])
    with pytest.raises(TypeError, match="MLflowRegistryResource"):
        build_definitions(registered.spec, resources={"churn_mlflow": object()})
    with pytest.raises(ValueError, match="churn_feast"):
        build_definitions(registered.spec, resources={"churn_feast": object()})


def test_the_components_mlflow_attribute_attaches_the_registry_in_dagster_and_in_the_cli(registered, tmp_path, monkeypatch, capsys):
    """``mlflow:`` in a defs.yaml (its tracking URI a ``{{ env.X }}`` template), loaded by Dagster's
    defs-folder loader: a publication registers what serves, a sensor update registers its partition,
    ``retrain rollback --spec defs.yaml`` moves that partition's alias back with no ``--mlflow``, and
    ``retrain materialize --all --spec defs.yaml`` and ``retrain tick --launch`` register in it."""
    import yaml
    from dagster import materialize
    from dagster.components.testing import create_defs_folder_sandbox

    from retrain_plugins.cli.main import main
    from retrain_plugins.dagster.component import TYPE_NAME, retraining_from_defs_yaml
    from retrain_plugins.dagster.execution import retraining_assets

    project, key = registered, PartitionKey("2025-03-01", "south")
    uri = f"sqlite:///{tmp_path / 'component.db'}"
    monkeypatch.setenv("RETRAIN_TEST_COMPONENT_MLFLOW_URI", uri)
    mlflow_attribute = {
        "tracking_uri": "{{ env.RETRAIN_TEST_COMPONENT_MLFLOW_URI }}",
        "artifact_location": str(tmp_path / "artifacts"),
        "alias": "prod",
    }
    attributes = {**json.loads(project.spec.model_dump_json()), "mlflow": mlflow_attribute}
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    alias = f"prod-{key.window}-{key.cohort}"
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "churn"
        folder.mkdir()
        defs_yaml = folder / "defs.yaml"
        defs_yaml.write_text(yaml.safe_dump({"type": TYPE_NAME, "attributes": attributes}, sort_keys=False))
        with sandbox.build_all_defs() as defs:
            resource = defs.resources[mlflow_resource_key(project.spec)]
            assert isinstance(resource, MLflowRegistryResource)
            assert (resource.tracking_uri, resource.alias) == (uri, "prod")  # the template rendered
            for name in ("sub_model", "model_bundle"):
                assert "churn_mlflow" in defs.resolve_assets_def(AssetKey(["churn", name])).required_resource_keys, name

            bundle = retraining_assets(defs, project.spec, "model_bundle")
            assert materialize(bundle, instance=project.instance, resources=defs.resources).success
            entries = model_store(project.spec).entries()
            serving = {v.tags["partition"]: v.version for v in client.search_model_versions(f"name = '{SUB_MODELS}'")}
            assert set(serving) == {str(k) for k in entries}  # the publication registered every serving model
            aliases = client.get_registered_model(SUB_MODELS).aliases
            assert aliases[alias] == serving[str(key)]
            assert str(client.get_registered_model(ROUTED).aliases["prod"]) == "1"

            scenarios.late_rows(
                DemoConfig(n_customers=60, months=3, cohorts=COHORTS), project.root / "data", key.window[:7],
                cohorts=(key.cohort,), batch=7, fraction=1.0,
            )  # fmt: skip
            requested = tick(defs, f"{project.spec.name}_change_sensor", project.instance)
            assert len(requested.run_requests) == 1
            assert all(r.success for r in execute(defs, project.spec, requested.run_requests, project.instance))
        new = [v for v in client.search_model_versions(f"name = '{SUB_MODELS}'") if v.version not in serving.values()]
        assert [v.tags["partition"] for v in new] == [str(key)]  # the update registered its partition only
        updated = client.get_registered_model(SUB_MODELS).aliases[alias]
        assert updated == new[0].version != serving[str(key)]
        assert client.get_model_version(SUB_MODELS, updated).tags["sha256"] == model_store(project.spec).entries()[key]["sha256"]

        assert retraining_from_defs_yaml(defs_yaml)[1] == {mlflow_resource_key(project.spec): resource}
        code = main(["rollback", key.window, key.cohort, "--spec", str(defs_yaml)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"MLflow: alias {alias} -> {SUB_MODELS} version {serving[str(key)]}" in out
        assert client.get_registered_model(SUB_MODELS).aliases[alias] == serving[str(key)]

        # `retrain materialize --all --spec defs.yaml` attaches it too: a new registry gets every partition
        cli_uri = f"sqlite:///{tmp_path / 'cli.db'}"
        monkeypatch.setenv("RETRAIN_TEST_COMPONENT_MLFLOW_URI", cli_uri)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        (tmp_path / "dagster_home").mkdir()
        assert main(["materialize", "--all", "--spec", str(defs_yaml)]) == 0
        registered_by_cli = mlflow.MlflowClient(tracking_uri=cli_uri, registry_uri=cli_uri)
        partitions = {v.tags["partition"] for v in registered_by_cli.search_model_versions(f"name = '{SUB_MODELS}'")}
        assert partitions == {str(k) for k in model_store(project.spec).entries()}

        # `retrain tick --launch --spec defs.yaml` too: the update it runs registers its partition there
        other = PartitionKey("2025-02-01", "north")
        scenarios.late_rows(
            DemoConfig(n_customers=60, months=3, cohorts=COHORTS), project.root / "data", other.window[:7],
            cohorts=(other.cohort,), batch=8, fraction=1.0,
        )  # fmt: skip
        before = {v.version for v in registered_by_cli.search_model_versions(f"name = '{SUB_MODELS}'")}
        assert main(["tick", "--launch", "--spec", str(defs_yaml)]) == 0, capsys.readouterr().out
        after = registered_by_cli.search_model_versions(f"name = '{SUB_MODELS}'")
        assert [v.tags["partition"] for v in after if v.version not in before] == [str(other)]
