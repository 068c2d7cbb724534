"""The retraining Dagster Component: registered, the spec's fields, builds what the factory builds.

Loading goes through Dagster's own defs-folder machinery (``create_defs_folder_sandbox``: a temp
project with a ``dg.toml`` and a ``defs/`` package, loaded by ``ComponentTree`` as ``dagster dev``
loads one), so the errors asserted here are the ones a user sees.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec, AutomationCondition, Definitions
from dagster.components.core.package_entry import discover_entry_point_package_objects
from dagster.components.core.snapshot import get_package_entry_snap
from dagster.components.testing import create_defs_folder_sandbox
from pydantic import BaseModel

from retrain_plugins import RetrainingSpec, build_definitions
from retrain_plugins.dagster.component import (
    REFUSED_TRANSLATION,
    TYPE_NAME,
    RetrainingComponent,
    spec_from_defs_yaml,
    yaml_model,
)
from retrain_plugins.dagster.component_attributes import LabelsAttributes, SpecSection, WindowsAttributes
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


def _inner(annotation):
    """``X`` of ``Annotated[X, ...]`` / ``Optional[Annotated[X, ...]]``."""
    while typing.get_origin(annotation) in (typing.Annotated, typing.Union):
        annotation = typing.get_args(annotation)[0]
    return annotation


def test_attributes_are_the_spec_fields_plus_the_sensor_interval_and_translation():
    """A static dataclass: one attribute per spec field (same defaults, same choices), plus two of its own."""
    fields = {f.name: f for f in dataclasses.fields(RetrainingComponent)}
    assert list(fields) == [*RetrainingSpec.model_fields, "sensor_interval_seconds", "translation"]
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
    ],
    ids=["wrong-type", "wrong-type-top-level", "unknown-key", "unknown-nested-key", "out-of-range", "bad-date",
         "end-before-start", "bad-name", "duplicate-cohorts", "empty-feature-service"],  # fmt: skip
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
    graph = _load(sandbox).resolve_asset_graph()
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
    loaded = _load(sandbox)
    assert {"churn_feast", "churn2_feast"} <= set(loaded.resources)
    keys = {k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()}
    assert {"churn/sub_model", "churn2/sub_model", "churn/model_bundle", "churn2/model_bundle"} <= keys
    assert {s.name for s in loaded.sensors} == {"churn_change_sensor", "churn2_change_sensor"}


# --- translation (as in dagster-dbt / dagster-sling) and Dagster's post_processing ---------------

BUNDLE_ONLY = "{{{{ {value} if asset_name == 'model_bundle' else spec.{attr} }}}}"

# Every AssetSpec attribute a translation can set, the YAML that sets it, and what the built spec shows.
# Templates see `spec`, `retraining` and `asset_name`.
SUPPORTED_TRANSLATION = {
    "owners": ({"owners": ["team:ml", "ana@example.com"]}, lambda s: s.owners == ["team:ml", "ana@example.com"]),
    "tags": ({"tags": {"tier": "gold", "stage": "{{ asset_name }}"}},
             lambda s: s.tags["tier"] == "gold" and s.tags["stage"] == s.key.path[-1]),
    "kinds": ({"kinds": ["catboost", "mlops"]}, lambda s: {"catboost", "mlops"} <= s.kinds),
    "group_name": ({"group_name": "{{ retraining }}_ml"}, lambda s: s.group_name == "churn_ml"),
    "automation_condition": (
        {"automation_condition": BUNDLE_ONLY.format(value="dg.AutomationCondition.on_cron('0 6 * * *')",
                                                    attr="automation_condition")},
        lambda s: (s.automation_condition is not None) == (s.key.path[-1] == "model_bundle"),
    ),
    "description": ({"description": "{{ asset_name }} of {{ retraining }}"},
                    lambda s: s.description == f"{s.key.path[-1]} of churn"),
    "metadata": ({"metadata": {"runbook": "https://wiki.example.com/churn"}},
                 lambda s: s.metadata["runbook"] == "https://wiki.example.com/churn"),
    "deps": (  # lineage of the label source: produced upstream (say, by a dbt model)
        {"deps": "{{ ['labels_upstream'] if asset_name == 'labels' else spec.deps }}"},
        lambda s: (AssetKey("labels_upstream") in {d.asset_key for d in s.deps}) == (s.key.path[-1] == "labels"),
    ),
    "freshness_policy": (
        {"freshness_policy": BUNDLE_ONLY.format(
            value="dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(days=2))", attr="freshness_policy")},
        lambda s: (s.freshness_policy is not None) == (s.key.path[-1] == "model_bundle"),
    ),
}
REFUSED_CASES = {
    "key": {"key": "other/{{ asset_name }}"},
    "key_prefix": {"key_prefix": "ml"},
    "partitions_def": {"partitions_def": {"type": "static", "partition_keys": ["a", "b"]}},
    "code_version": {"code_version": "7"},
    "skippable": {"skippable": True},
}


def _with_translation(path: Path, translation: dict) -> None:
    import yaml

    document = yaml.safe_load(path.read_text())
    document["attributes"]["translation"] = translation
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_translation_sets_every_supported_attribute_on_every_asset(sandbox_project):
    """All supported attributes at once (one load), checked on each of the retraining's assets."""
    sandbox, path, root = sandbox_project
    merged = {}
    for attributes, _ in SUPPORTED_TRANSLATION.values():
        merged.update(attributes)
    _with_translation(path, merged)
    loaded = _load(sandbox)
    plain = build_definitions(make_spec(root), sensor_interval_seconds=7)
    specs = {s.key: s for s in loaded.resolve_all_asset_specs() if s.key.path[0] == "churn"}
    untranslated = {s.key: s for s in plain.resolve_all_asset_specs()}
    assert set(specs) == set(untranslated) and len(specs) == 7
    for key, spec in specs.items():
        for name, (_, holds) in SUPPORTED_TRANSLATION.items():
            assert holds(spec), f"{name} on {key.to_user_string()}: {spec}"
        # the retraining's own attributes stay: code version, partitions, its tags and metadata beside the
        # new ones; kinds are replaced, as Dagster's translation replaces every attribute but tags and metadata
        before = untranslated[key]
        assert spec.code_version == before.code_version and spec.partitions_def == before.partitions_def
        own_tags = {k: v for k, v in before.tags.items() if not k.startswith("dagster/kind/")}
        assert own_tags.items() <= spec.tags.items() and before.metadata.keys() <= spec.metadata.keys()
        assert spec.kinds == {"catboost", "mlops"}
    # the automation condition is Dagster's own object, from the `dg` template scope
    bundle = specs[AssetKey(["churn", "model_bundle"])]
    assert isinstance(bundle.automation_condition, AutomationCondition)
    assert loaded.resolve_sensor_def("churn_change_sensor").minimum_interval_seconds == 7


@pytest.mark.parametrize("attribute", list(REFUSED_CASES))
def test_translation_refuses_what_the_retraining_owns(sandbox_project, attribute):
    sandbox, path, _ = sandbox_project
    _with_translation(path, REFUSED_CASES[attribute])
    with pytest.raises(Exception) as failed:
        _load(sandbox)
    message = _chain(failed.value)
    assert f"attributes.translation at {path}:" in message and f"cannot set {attribute}" in message, message
    assert REFUSED_TRANSLATION[attribute] in message


def test_translation_is_comprehensive():
    """Like dagster's own test of the same name: every AssetSpec attribute translation can take is
    either tested above as set on the built assets, or refused with a reason."""
    from dagster.components.resolved.core_models import AssetAttributesModel

    assert not set(SUPPORTED_TRANSLATION) & set(REFUSED_TRANSLATION)
    assert set(REFUSED_CASES) == set(REFUSED_TRANSLATION)
    assert set(SUPPORTED_TRANSLATION) | set(REFUSED_TRANSLATION) == set(AssetAttributesModel.model_fields), (
        f"untested: {set(AssetAttributesModel.model_fields) - set(SUPPORTED_TRANSLATION) - set(REFUSED_TRANSLATION)}"
    )


def test_post_processing_targets_one_asset(sandbox_project):
    """Dagster's standard ``post_processing:`` (beside ``attributes:``) works on the component's assets."""
    sandbox, path, _ = sandbox_project
    path.write_text(
        path.read_text()
        + """post_processing:
  assets:
    - target: "key:churn/model_bundle"
      attributes:
        owners: [team:serving]
        tags: {sla: daily}
        kinds: [mlops]
        automation_condition: "{{ dg.AutomationCondition.on_cron('0 6 * * *') }}"
    - target: "key:churn/labels"
      attributes: {deps: [warehouse/churn_labels]}
"""
    )
    specs = {s.key.path[-1]: s for s in _load(sandbox).resolve_all_asset_specs()}
    bundle = specs["model_bundle"]
    assert bundle.owners == ["team:serving"] and bundle.tags["sla"] == "daily" and "mlops" in bundle.kinds
    assert isinstance(bundle.automation_condition, AutomationCondition)
    others = [s for name, s in specs.items() if name != "model_bundle" and s.key.path[0] == "churn"]
    assert others and all(not s.owners and "sla" not in s.tags and s.automation_condition is None for s in others)
    assert [d.asset_key for d in specs["labels"].deps] == [AssetKey(["warehouse", "churn_labels"])]


def test_a_python_translation_cannot_change_what_the_retraining_owns(tmp_path):
    """Translations from Python (or a template UDF) are checked on the built spec too."""
    spec = make_spec(tmp_path)
    component = RetrainingComponent(
        **{name: getattr(spec, name) for name in ("name", "feature_repo", "feature_service", "data_dir", "cohorts")},
        labels=LabelsAttributes.model_validate(spec.labels.model_dump()),
        windows=WindowsAttributes.model_validate(spec.windows.model_dump()),
        translation=lambda s, asset: s.replace_attributes(code_version=f"{asset.asset_name}-1"),
    )
    with pytest.raises(SpecError, match=r"translation of churn/labels changes code_version: `code_version`: the code version"):
        component.translate(AssetSpec(["churn", "labels"], code_version="abc"))
    component.translation = lambda s, asset: s.replace_attributes(owners=["team:ml"])
    assert component.translate(AssetSpec(["churn", "labels"])).owners == ["team:ml"]
