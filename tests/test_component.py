"""The retraining Dagster Component: registered, mirrors the spec, builds what the factory builds.

Loading goes through Dagster's own defs-folder machinery (``create_defs_folder_sandbox``: a temp
project with a ``dg.toml`` and a ``defs/`` package, loaded by ``ComponentTree`` as ``dagster dev``
loads one), so the errors asserted here are the ones a user sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions
from dagster.components.core.package_entry import discover_entry_point_package_objects
from dagster.components.core.snapshot import get_package_entry_snap
from dagster.components.testing import create_defs_folder_sandbox

from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.dagster.component import TYPE_NAME, RetrainingComponent, spec_from_defs_yaml, yaml_model
from retrain_plugins.errors import SpecError
from retrain_plugins.layout import model_store_root

from .helpers import make_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DEFS_YAML = REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml"

# A test-size retraining, as a user writes it; {repo} and {data} are relative to the defs.yaml folder.
DEFS_YAML = """\
type: retrain_plugins.dagster.component.RetrainingComponent
attributes:
  name: churn
  feature_repo: {repo}
  feature_service: churn_model_v1
  data_dir: {data}
  labels:
    path: sources/labels/*/*.parquet
    entity_column: customer_id
    timestamp_column: label_timestamp
    label_column: churned
    cohort_column: region
  windows:
    granularity: monthly
    start: 2025-01-01
    end: 2025-04-01
    lookback: 1
  cohorts: [north, south, east, west]
  trainer:
    name: catboost
    params: {{iterations: 25, depth: 4}}
  sensor_interval_seconds: 7
"""


def _chain(exc: BaseException) -> str:
    """The text of an exception and all its causes: what Dagster prints for a failed load."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.fixture
def sandbox_project(tmp_path) -> Iterator[tuple[Path, Path]]:
    """(defs.yaml path in a fresh Dagster defs folder, the project root its relative paths name)."""
    root = tmp_path / "project"
    (root / "feature_repo").mkdir(parents=True)
    (root / "data").mkdir()
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "churn"
        folder.mkdir()
        rel = Path(os.path.relpath(root, folder))
        path = folder / "defs.yaml"
        path.write_text(DEFS_YAML.format(repo=rel / "feature_repo", data=rel / "data"))
        yield sandbox, path, root


def _load(sandbox) -> Definitions:
    with sandbox.build_all_defs() as defs:
        return defs


def test_registered_as_a_dagster_component_type():
    """What `dg list components` lists: entry point group dagster_dg_cli.registry_modules."""
    objects = discover_entry_point_package_objects()
    keys = {key.to_typename(): key for key in objects}
    assert TYPE_NAME in keys
    snap = get_package_entry_snap(keys[TYPE_NAME], objects[keys[TYPE_NAME]])
    assert snap.summary.startswith("One partial retraining")
    assert set(snap.produces) == {"asset", "sensor", "resource"}
    assert not any(k.startswith("retrain_plugins") and k != TYPE_NAME for k in keys)  # the abstract base is not listed


def test_attributes_are_the_spec_fields_plus_the_sensor_interval():
    assert list(RetrainingComponent.model_fields) == [*RetrainingSpec.model_fields, "sensor_interval_seconds", "in_process_executor"]
    for section in ("labels", "windows", "trainer", "change_detection"):
        spec_model = RetrainingSpec.model_fields[section].annotation
        assert list(yaml_model(spec_model).model_fields) == list(spec_model.model_fields), section
        assert yaml_model(spec_model).model_config["extra"] == "forbid"
    assert RetrainingComponent.model_fields["sensor_interval_seconds"].default == 10


def test_demo_defs_yaml_resolves_paths_against_its_folder():
    from_component = spec_from_defs_yaml(DEMO_DEFS_YAML)
    assert from_component.feature_repo == REPO_ROOT / "feature_repo"
    assert from_component.data_dir == REPO_ROOT / "data"


def test_component_builds_exactly_what_build_definitions_builds(sandbox_project):
    sandbox, _, root = sandbox_project
    loaded = _load(sandbox)
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
    assert sensor.minimum_interval_seconds == 7
    # relative paths resolved against the defs.yaml's folder
    assert loaded.resources["churn_feast"].repo_path == str(root / "feature_repo")
    assert model_store_root(make_spec(root)) == root / "data" / "models" / "churn"
    assert loaded.resources == expected.resources


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # wrong type: Dagster's schema check, names the key path and the line in defs.yaml
        ("    lookback: 1", "    lookback: one", ["attributes.windows", "lookback", "valid integer", "defs.yaml:13"]),
        ("  cohorts: [north, south, east, west]", "  cohorts: north", ["cohorts", "valid list"]),
        # unknown keys, top level and nested
        ("  cohorts: [", "  cohort: [", ["attributes.cohort ", "Extra inputs are not permitted", "defs.yaml:18"]),
        ("    label_column: churned", "    label_column: churned\n    weight_column: w",
         ["attributes.labels", "weight_column", "Extra inputs are not permitted"]),
        # values: the spec's rules, named as attributes.<field> with the file
        ("    lookback: 1", "    lookback: 0", ["attributes.windows.lookback", "greater than or equal to 1"]),
        ("    start: 2025-01-01", "    start: 2025-13-01", ["attributes.windows.start", "valid date"]),
        ("    end: 2025-04-01", "    end: 2024-04-01", ["attributes.windows", "must be after windows.start"]),
        ("  name: churn", "  name: churn-model", ["attributes.name", "pattern"]),
    ],
    ids=["wrong-type", "wrong-type-top-level", "unknown-key", "unknown-nested-key", "out-of-range", "bad-date",
         "end-before-start", "bad-name"],  # fmt: skip
)
def test_invalid_defs_yaml_names_the_field(sandbox_project, old, new, expected):
    sandbox, path, _ = sandbox_project
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(Exception) as failed:
        _load(sandbox)
    message = _chain(failed.value)
    assert "churn" in message and "defs.yaml" in message  # the component's folder and file
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_spec_from_defs_yaml_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "defs.yaml"
    path.write_text(DEFS_YAML.format(repo="feature_repo", data="data").replace("cohort_column: region", "cohort_col: region"))
    with pytest.raises(SpecError, match=r"defs\.yaml.*attributes\.labels"):
        spec_from_defs_yaml(path)
    path.write_text("type: dagster.DefsFolderComponent\n")
    with pytest.raises(SpecError, match="exactly one retrain_plugins.dagster.component.RetrainingComponent"):
        spec_from_defs_yaml(path)


def test_attributes_render_dagster_templates(sandbox_project, monkeypatch, tmp_path):
    """``{{ env.X }}`` works as in any Dagster component, e.g. a data folder per deployment."""
    sandbox, path, _ = sandbox_project
    monkeypatch.setenv("RETRAIN_TEST_DATA_DIR", str(tmp_path / "elsewhere"))
    text = path.read_text()
    path.write_text(text.replace(text.split("data_dir: ")[1].split("\n")[0], '"{{ env.RETRAIN_TEST_DATA_DIR }}"'))
    graph = _load(sandbox).resolve_asset_graph()
    labels = graph.get(AssetKey(["churn", "labels"])).metadata["path"].value
    assert labels.startswith(str(tmp_path / "elsewhere" / "sources"))
    assert spec_from_defs_yaml(path).data_dir == tmp_path / "elsewhere"


def test_two_retraining_components_load_in_one_code_location(sandbox_project):
    """Each retraining registers its own resource key: no "different resources with same key"."""
    sandbox, path, root = sandbox_project
    second = sandbox.defs_folder_path / "churn2"
    second.mkdir()
    (second / "defs.yaml").write_text(path.read_text().replace("name: churn", "name: churn2"))
    loaded = _load(sandbox)
    assert {"churn_feast", "churn2_feast"} <= set(loaded.resources)
    keys = {k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()}
    assert {"churn/sub_model", "churn2/sub_model", "churn/model_bundle", "churn2/model_bundle"} <= keys
    assert {s.name for s in loaded.sensors} == {"churn_change_sensor", "churn2_change_sensor"}
