"""The retraining Dagster Component: registered, the spec's fields, builds what the factory builds.

Loading goes through Dagster's own defs-folder machinery (tests/component_sandbox.py), so the
errors asserted here are the ones a user sees. Translation and post-processing:
tests/test_component_translation.py.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from dagster import AssetKey
from dagster.components.core.package_entry import discover_entry_point_package_objects
from dagster.components.core.snapshot import get_package_entry_snap
from pydantic import BaseModel

from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.dagster.component import TYPE_NAME, RetrainingComponent, spec_from_defs_yaml, yaml_model
from retrain_plugins.dagster.component_attributes import SpecSection
from retrain_plugins.errors import SpecError
from retrain_plugins.layout import model_store_root
from retrain_plugins.mlflow import MLflowRegistryResource

from .component_sandbox import DEFS_YAML, chain, defs_sandbox, load
from .helpers import make_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DEFS_YAML = REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml"


@pytest.fixture
def sandbox_project(tmp_path):
    with defs_sandbox(tmp_path) as sandbox:
        yield sandbox

def test_registered_as_a_dagster_component_type():
    """What `dg list components` lists: entry point group dagster_dg_cli.registry_modules."""
    objects = discover_entry_point_package_objects()
    keys = {key.to_typename(): key for key in objects}
    assert TYPE_NAME in keys
    snap = get_package_entry_snap(keys[TYPE_NAME], objects[keys[TYPE_NAME]])
    assert snap.summary.startswith("One partial retraining")
    assert set(snap.produces) == {"asset", "sensor", "resource"}
    assert not any(k.startswith("retrain_plugins") and k != TYPE_NAME for k in keys)  # the abstract base is not listed


def _inner(annotation):
    """``X`` of ``Annotated[X, ...]`` / ``Optional[Annotated[X, ...]]``."""
    while typing.get_origin(annotation) in (typing.Annotated, typing.Union):
        annotation = typing.get_args(annotation)[0]
    return annotation


def test_attributes_are_the_spec_fields_plus_the_sensor_interval_and_translation():
    """A static dataclass: one attribute per spec field (same defaults, same choices), plus two of its own."""
    fields = {f.name: f for f in dataclasses.fields(RetrainingComponent)}
    assert list(fields) == [*RetrainingSpec.model_fields, "sensor_interval_seconds", "in_process_executor", "mlflow", "translation"]
    assert list(RetrainingComponent.model().model_fields) == list(fields)  # the YAML schema Dagster derives
    for name, info in RetrainingSpec.model_fields.items():
        field, kind = fields[name], _inner(fields[name].type)
        assert (field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING) == info.is_required(), name
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            # a spec section: the spec's own model (every validator), readable from YAML
            assert issubclass(kind, info.annotation) and issubclass(kind, SpecSection), name
            assert list(yaml_model(info.annotation).model_fields) == list(info.annotation.model_fields), name
            assert yaml_model(info.annotation).model_config["extra"] == "forbid"
            if not info.is_required():
                assert field.default_factory().model_dump() == info.get_default(call_default_factory=True).model_dump(), name
        elif not info.is_required():
            assert field.default == info.get_default(call_default_factory=True), name
        if typing.get_origin(info.annotation) is typing.Literal:
            assert typing.get_args(kind) == typing.get_args(info.annotation), name
    assert fields["sensor_interval_seconds"].default == 10 and fields["translation"].default is None
    assert fields["in_process_executor"].default is True
    # mlflow: the resource's own fields, nothing attached by default
    assert fields["mlflow"].default is None and _inner(fields["mlflow"].type) is MLflowRegistryResource
    mlflow_schema = _inner(RetrainingComponent.model().model_fields["mlflow"].annotation)
    assert list(mlflow_schema.model_fields) == list(MLflowRegistryResource.model_fields)


def test_demo_defs_yaml_resolves_paths_against_its_folder():
    from_component = spec_from_defs_yaml(DEMO_DEFS_YAML)
    assert from_component.feature_repo == REPO_ROOT / "feature_repo"
    assert from_component.data_dir == REPO_ROOT / "data"


def test_component_builds_exactly_what_build_definitions_builds(sandbox_project):
    sandbox, _, root = sandbox_project
    loaded = load(sandbox)
    expected = build_definitions(make_spec(root), sensor_interval_seconds=7)

    graph, want = loaded.resolve_asset_graph(), expected.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {k.to_user_string() for k in want.get_all_asset_keys()}
    assert {"churn/training_set", "churn/sub_model", "churn/model_bundle"} <= keys
    for key in graph.get_all_asset_keys():
        node, ref = graph.get(key), want.get(key)
        assert node.code_version == ref.code_version, key
        assert node.parent_keys == ref.parent_keys, key
        assert (node.partitions_def and node.partitions_def.get_partition_keys()) == (
            ref.partitions_def and ref.partitions_def.get_partition_keys()
        ), key
    assert len(graph.get(AssetKey(["churn", "sub_model"])).partitions_def.get_partition_keys()) == 3 * 4
    sensor = loaded.resolve_sensor_def("churn_change_sensor")
    assert sensor.minimum_interval_seconds == 9  # 7 s: rounded up to the loop, one second under
    # relative paths resolved against the defs.yaml's folder
    assert loaded.resources["churn_feast"].repo_path == str(root / "feature_repo")
    assert model_store_root(make_spec(root)) == root / "data" / "models" / "churn"
    assert loaded.resources == expected.resources


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # wrong type: Dagster's schema check, names the key path and the line in defs.yaml
        ("    lookback: 1", "    lookback: one", ["attributes.windows", "lookback", "valid integer", "defs.yaml:13"]),
        ("  cohorts: [north, south, east, west]", "  cohorts: north", ["attributes.cohorts", "valid list", "defs.yaml:18"]),
        # unknown keys, top level and nested
        ("  cohorts: [", "  cohort: [", ["attributes.cohort ", "Extra inputs are not permitted", "defs.yaml:18"]),
        ("    label_column: churned", "    label_column: churned\n    weight_column: w",
         ["attributes.labels", "weight_column", "Extra inputs are not permitted"]),
        # values: the spec's rules, named as attributes.<field> with the file and the line
        ("    lookback: 1", "    lookback: 0",
         ["attributes.windows.lookback", "defs.yaml:17", "greater than or equal to 1 (got 0)"]),
        ("    start: 2025-01-01", "    start: 2025-13-01", ["attributes.windows.start", "defs.yaml:15", "valid date"]),
        ("    end: 2025-04-01", "    end: 2024-04-01", ["attributes.windows", "defs.yaml:13", "must be after windows.start"]),
        ("  name: churn", "  name: churn-model", ["attributes.name", "defs.yaml:3", "pattern"]),
        ("  cohorts: [north, south, east, west]", "  cohorts: [north, north]",
         ["attributes.cohorts", "defs.yaml:18", "cohorts must be unique"]),
        # required text left empty (what the scaffold leaves to fill in)
        ("  feature_service: churn_model_v1", '  feature_service: ""',
         ["attributes.feature_service", "defs.yaml:5", "is empty: Feast feature service"]),
        # mlflow: the resource's fields
        ("  sensor_interval_seconds: 7", "  sensor_interval_seconds: 7\n  mlflow: {alias: prod}",
         ["attributes.mlflow", "tracking_uri", "Field required", "defs.yaml:23"]),
        ("  sensor_interval_seconds: 7", "  sensor_interval_seconds: 7\n  mlflow: {tracking_uri: 'sqlite:///m.db', uri: x}",
         ["attributes.mlflow", "uri", "Extra inputs are not permitted", "defs.yaml:23"]),
        ("  sensor_interval_seconds: 7", '  sensor_interval_seconds: 7\n  mlflow: "sqlite:///m.db"',
         ["attributes.mlflow", "defs.yaml:23", "the MLflow registry's fields, not 'sqlite:///m.db'"]),
    ],
    ids=["wrong-type", "wrong-type-top-level", "unknown-key", "unknown-nested-key", "out-of-range", "bad-date",
         "end-before-start", "bad-name", "duplicate-cohorts", "empty-feature-service", "mlflow-missing-uri",
         "mlflow-unknown-key", "mlflow-not-a-mapping"],  # fmt: skip
)
def test_invalid_defs_yaml_names_the_field(sandbox_project, old, new, expected):
    sandbox, path, _ = sandbox_project
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(Exception) as failed:
        load(sandbox)
    message = chain(failed.value)
    assert "churn" in message and "defs.yaml" in message  # the component's folder and file
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_spec_from_defs_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "defs.yaml"
    path.write_text(DEFS_YAML.format(repo="feature_repo", data="data").replace("cohort_column: region", "cohort_col: region"))
    with pytest.raises(SpecError, match=r"attributes\.labels\.cohort_col at .*defs\.yaml:12: Extra inputs"):
        spec_from_defs_yaml(path)
    path.write_text("type: dagster.DefsFolderComponent\n")
    with pytest.raises(SpecError, match="exactly one retrain_plugins.dagster.component.RetrainingComponent"):
        spec_from_defs_yaml(path)


def test_attributes_render_dagster_templates(sandbox_project, monkeypatch, tmp_path):
    """``{{ env.X }}`` works as in any Dagster component, top level and inside sections (``labels.path``)."""
    sandbox, path, _ = sandbox_project
    monkeypatch.setenv("RETRAIN_TEST_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RETRAIN_TEST_LABELS", "labels_v2/*.parquet")
    text = path.read_text()
    text = text.replace(text.split("data_dir: ")[1].split("\n")[0], '"{{ env.RETRAIN_TEST_DATA_DIR }}"')
    path.write_text(text.replace("path: sources/labels/*/*.parquet", 'path: "{{ env.RETRAIN_TEST_LABELS }}"'))
    graph = load(sandbox).resolve_asset_graph()
    labels = graph.get(AssetKey(["churn", "labels"])).metadata["path"].value
    assert labels == str(tmp_path / "elsewhere" / "labels_v2" / "*.parquet")
    spec = spec_from_defs_yaml(path)
    assert spec.data_dir == tmp_path / "elsewhere" and spec.labels.path == "labels_v2/*.parquet"


def test_two_retraining_components_load_in_one_code_location(sandbox_project):
    """Each retraining registers its own resource key: no "different resources with same key"."""
    sandbox, path, root = sandbox_project
    second = sandbox.defs_folder_path / "churn2"
    second.mkdir()
    (second / "defs.yaml").write_text(path.read_text().replace("name: churn", "name: churn2"))
    loaded = load(sandbox)
    assert {"churn_feast", "churn2_feast"} <= set(loaded.resources)
    keys = {k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()}
    assert {"churn/sub_model", "churn2/sub_model", "churn/model_bundle", "churn2/model_bundle"} <= keys
    assert {s.name for s in loaded.sensors} == {"churn_change_sensor", "churn2_change_sensor"}
