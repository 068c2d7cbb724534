"""The Component's ``translation`` (as in dagster-dbt / dagster-sling) and Dagster's ``post_processing``.

Every AssetSpec attribute is either set on the built assets from YAML or refused with a reason
(``test_translation_is_comprehensive``, after dagster's own test of that name).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetSpec, AutomationCondition

from retrain_plugins import build_definitions
from retrain_plugins.dagster.component import RetrainingComponent
from retrain_plugins.dagster.component_translation import REFUSED_TRANSLATION
from retrain_plugins.dagster.component_attributes import LabelsAttributes, WindowsAttributes
from retrain_plugins.errors import SpecError

from .component_sandbox import chain, defs_sandbox, load
from .helpers import make_spec


@pytest.fixture
def sandbox_project(tmp_path):
    with defs_sandbox(tmp_path) as sandbox:
        yield sandbox


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
    loaded = load(sandbox)
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
    assert loaded.resolve_sensor_def("churn_change_sensor").minimum_interval_seconds == 9  # 7 s: rounded up to the loop, one second under


@pytest.mark.parametrize("attribute", list(REFUSED_CASES))
def test_translation_refuses_what_the_retraining_owns(sandbox_project, attribute):
    sandbox, path, _ = sandbox_project
    _with_translation(path, REFUSED_CASES[attribute])
    with pytest.raises(Exception) as failed:
        load(sandbox)
    message = chain(failed.value)
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
    specs = {s.key.path[-1]: s for s in load(sandbox).resolve_all_asset_specs()}
    bundle = specs["model_bundle"]
    assert bundle.owners == ["team:serving"] and bundle.tags["sla"] == "daily" and "mlops" in bundle.kinds
    assert isinstance(bundle.automation_condition, AutomationCondition)
    others = [s for name, s in specs.items() if name != "model_bundle" and s.key.path[0] == "churn"]
    assert others and all(not s.owners and "sla" not in s.tags and s.automation_condition is None for s in others)
    assert [d.asset_key for d in specs["labels"].deps] == [AssetKey(["warehouse", "churn_labels"])]


def test_a_python_translation_cannot_change_what_the_retraining_owns(tmp_path):
    """Built from Python: sections may be spec models or mappings; translations are checked on the built spec."""
    spec = make_spec(tmp_path)
    component = RetrainingComponent(
        **{name: getattr(spec, name) for name in ("name", "feature_repo", "feature_service", "data_dir", "cohorts")},
        labels=spec.labels,  # a plain LabelSource (or a mapping) becomes the section type
        windows=spec.windows.model_dump(),
        translation=lambda s, asset: s.replace_attributes(code_version=f"{asset.asset_name}-1"),
    )
    assert isinstance(component.labels, LabelsAttributes) and isinstance(component.windows, WindowsAttributes)
    with pytest.raises(SpecError, match=r"translation of churn/labels changes code_version: `code_version`: the code version"):
        component.translate(AssetSpec(["churn", "labels"], code_version="abc"))
    component.translation = lambda s, asset: s.replace_attributes(owners=["team:ml"])
    assert component.translate(AssetSpec(["churn", "labels"])).owners == ["team:ml"]
