"""``RetrainingComponent``: one retraining declared in a Dagster ``defs.yaml``.

The attributes are :class:`~retrain_plugins.spec.RetrainingSpec`'s fields, so a plain spec YAML
moves into a defs folder unchanged under ``attributes:``; the component adds
``sensor_interval_seconds``, ``in_process_executor``, ``mlflow`` and ``translation``::

    # <project>/defs/churn/defs.yaml  (relative paths resolve against this file's folder)
    type: retrain_plugins.dagster.component.RetrainingComponent
    attributes:
      name: churn
      feature_repo: ../../../feature_repo
      feature_service: churn_model_v1
      data_dir: ../../../data
      labels: {path: sources/labels/*/*.parquet, entity_column: customer_id,
               timestamp_column: label_timestamp, label_column: churned, cohort_column: region}
      windows: {granularity: monthly, start: "2025-01-01", end: "2026-01-01", lookback: 1}
      cohorts: [north, south, east, west]
      trainer: {name: catboost, params: {iterations: 200, depth: 6}}
      sensor_interval_seconds: 10     # attributes that are not spec fields: the sensor's interval,
      in_process_executor: true       # whether runs execute in one process (see build_definitions),
      mlflow: {tracking_uri: "{{ env.MLFLOW_TRACKING_URI }}"}   # the MLflow registry (optional),
      translation: {owners: [team:ml], tags: {tier: gold}, kinds: [catboost]}   # and asset attributes
    post_processing:                  # Dagster's own, on every component
      assets:
        - target: "key:churn/model_bundle"
          attributes: {automation_condition: "{{ dg.AutomationCondition.on_cron('0 6 * * *') }}"}

``build_defs`` returns ``build_definitions(spec)`` with ``translation`` applied to each asset spec:
the Python factory and the component build the same assets, sensor and resources. ``dg scaffold
defs retrain_plugins.dagster.component.RetrainingComponent <name>`` writes a commented defs.yaml
(:mod:`retrain_plugins.dagster.component_scaffold`); ``translation`` is read and checked in
:mod:`retrain_plugins.dagster.component_translation`. Dagster finds the type through this package's
``dagster_dg_cli.registry_modules`` entry point (``dg list components``). Each retraining has its own
Feast resource (key ``<name>_feast``) and storage, so several retraining components live in one
code location.
"""

# No ``from __future__ import annotations``: Dagster derives the YAML schema from the dataclass
# fields' annotations at run time.
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Optional, Union

import dagster as dg
import yaml
from dagster.components.resolved.core_models import AssetAttributesModel
from dagster.components.resolved.errors import ResolutionException
from dagster.components.utils.translation import TranslationFn
from dagster_shared.yaml_utils import parse_yamls_with_source_position
from pydantic import BaseModel, TypeAdapter, ValidationError

from retrain_plugins.dagster.component_attributes import (
    ChangeDetectionAttributes,
    FallbackAttributes,
    GateAttributes,
    LabelsAttributes,
    MLFLOW_ATTRIBUTE,
    StoreAttributes,
    TrainerAttributes,
    WindowsAttributes,
    attributes_error,
    refuse_empty,
    yaml_model,
)
from retrain_plugins.dagster.component_scaffold import TYPE_NAME, RetrainingScaffolder
from retrain_plugins.dagster.component_translation import RetrainingAsset, resolve_translation, translated
from retrain_plugins.dagster.definitions import build_definitions
from retrain_plugins.errors import SpecError
from retrain_plugins.mlflow.resource import MLflowRegistryResource, mlflow_resource_key
from retrain_plugins.spec import RetrainingSpec

__all__ = ["TYPE_NAME", "RetrainingAsset", "RetrainingComponent", "retraining_from_defs_yaml", "spec_from_defs_yaml", "yaml_model"]


def _path(context: dg.ResolutionContext, value: str) -> Path:
    return Path(value)


def _spec_field(name: str) -> dg.Resolver:
    """The YAML schema entry of a top-level spec field: described as the spec describes it."""
    return dg.Resolver.default(description=RetrainingSpec.model_fields[name].description)


def _spec_path(name: str) -> dg.Resolver:
    return dg.Resolver(_path, model_field_type=str, description=RetrainingSpec.model_fields[name].description)


@dg.scaffold_with(RetrainingScaffolder)
@dataclass(kw_only=True)
class RetrainingComponent(dg.Component, dg.Resolvable):
    """One partial retraining: Feast training sets and one sub-model per (window, cohort).

    Attributes: the retraining spec's fields (relative `feature_repo` and
    `data_dir` resolve against the defs.yaml's folder, `labels.path` against
    `data_dir`), `sensor_interval_seconds`, and `translation` (owners, tags,
    kinds, group, automation condition... of every asset).

    Builds the assets `<name>/labels` and `<name>/features` (sources),
    `<name>/training_set` and `<name>/sub_model` (window x cohort partitions),
    `<name>/fallback_model`, `<name>/model_bundle` and `<name>/online_features`,
    the sensor `<name>_change_sensor` and the resource `<name>_feast`.

    Scaffold options: --feature-repo PATH, --data-dir PATH (default
    <project>/feature_repo and <project>/data).
    """

    name: Annotated[str, _spec_field("name")]
    feature_repo: Annotated[Path, _spec_path("feature_repo")]
    feature_service: Annotated[str, _spec_field("feature_service")]
    labels: Annotated[LabelsAttributes, _spec_field("labels")]
    windows: Annotated[WindowsAttributes, _spec_field("windows")]
    cohorts: Annotated[Sequence[str], _spec_field("cohorts")] = ()
    dynamic_cohorts: Annotated[bool, _spec_field("dynamic_cohorts")] = False
    retrieval: Annotated[Literal["feast", "duckdb_asof"], _spec_field("retrieval")] = "feast"
    task: Annotated[Literal["auto", "binary", "multiclass", "regression"], _spec_field("task")] = "auto"
    trainer: TrainerAttributes = field(default_factory=TrainerAttributes)
    gate: GateAttributes = field(default_factory=GateAttributes)
    fallback: FallbackAttributes = field(default_factory=FallbackAttributes)
    store: StoreAttributes = field(default_factory=StoreAttributes)
    change_detection: ChangeDetectionAttributes = field(default_factory=ChangeDetectionAttributes)
    data_dir: Annotated[Path, _spec_path("data_dir")]
    sensor_interval_seconds: Annotated[
        int,
        dg.Resolver.default(
            description=(
                "Seconds between two ticks of the change sensor (not a spec field), rounded up to "
                "a multiple of the daemon's 5 s loop. A tick with no change costs <= 0.3 s even at "
                "1,008 partitions, so the default is short."
            )
        ),
    ] = 10
    in_process_executor: Annotated[
        bool,
        dg.Resolver.default(
            description=(
                "Runs of this code location's assets execute in one process (Dagster's in_process_executor); "
                "false leaves the executor to the code location, e.g. dagster-k8s' or dagster-celery's on the "
                "top-level Definitions (not a spec field)."
            )
        ),
    ] = True
    mlflow: Optional[Annotated[MLflowRegistryResource, MLFLOW_ATTRIBUTE]] = None  # noqa: UP045
    translation: Optional[  # noqa: UP045 - Dagster reads this annotation
        Annotated[
            TranslationFn[RetrainingAsset],
            dg.Resolver(
                resolve_translation,
                model_field_type=Union[str, AssetAttributesModel],  # noqa: UP007
                inject_before_resolve=False,
                description=(
                    "Attributes of every asset spec, as in dagster-dbt's and dagster-sling's components: "
                    "owners, tags, kinds, group_name, automation_condition, description, metadata, deps, "
                    "freshness_policy (key, key_prefix, partitions_def, code_version and skippable are the "
                    "retraining's own). Templates see `spec`, `retraining` and `asset_name`."
                ),
                examples=[{"owners": ["team:ml"], "tags": {"tier": "gold"}, "group_name": "{{ retraining }}_ml"}],
            ),
        ]
    ] = None

    def __post_init__(self) -> None:
        # A section given as a mapping (from Python, or a `{{ ... }}` template rendering to one) is
        # validated into its section type here, so every section attribute is what it is typed as.
        for name, section in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, section):
                setattr(self, name, section.model_validate(value.model_dump() if isinstance(value, BaseModel) else value))

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(
            description=(
                "Partial retraining from a Feast feature service: one sub-model per (time window x cohort), "
                "retrained only where its training data changed."
            ),
            tags=["retraining", "feast", "catboost"],
            produces=["asset", "sensor", "resource"],
        )

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel) -> "RetrainingComponent":
        """Dagster's resolution, then the spec's rules across fields; errors name the attribute and its line."""
        refuse_empty(context, RetrainingSpec, model.model_dump(exclude_unset=True))
        component = super().resolve_from_model(context, model)
        try:
            RetrainingSpec.model_validate(component.spec_attributes())
        except ValidationError as exc:
            raise attributes_error(context, exc, "invalid retraining component attributes:") from None
        return component

    def spec_attributes(self) -> dict[str, Any]:
        """The :class:`RetrainingSpec` these attributes describe, as plain data (paths as written)."""
        values = {name: getattr(self, name) for name in RetrainingSpec.model_fields}
        return {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in values.items()}

    def to_spec(self, base_dir: Path) -> RetrainingSpec:
        """Validate the attributes as a :class:`RetrainingSpec` with paths resolved against ``base_dir``.

        Raises:
            SpecError: naming ``base_dir``'s defs.yaml and each offending ``attributes.<field>``.
        """
        try:
            return RetrainingSpec.model_validate(self.spec_attributes()).resolve(Path(base_dir))
        except ValidationError as exc:
            where = Path(base_dir) / "defs.yaml"
            problems = "; ".join(f"attributes.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SpecError(f"invalid retraining component in {where}: {problems}") from exc

    def translate(self, spec: dg.AssetSpec) -> dg.AssetSpec:
        """``spec`` with ``translation`` applied (unchanged without one)."""
        if self.translation is None:
            return spec
        return translated(self.translation, spec, RetrainingAsset(self.name, spec.key.path[-1]))

    def resources(self, spec: RetrainingSpec) -> dict[str, Any]:
        """What these attributes add to ``build_definitions``' resources: ``mlflow:`` under ``<name>_mlflow``."""
        return {mlflow_resource_key(spec): self.mlflow} if self.mlflow is not None else {}

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """``build_definitions(spec)`` for these attributes (paths relative to the defs.yaml), translated."""
        spec = self.to_spec(context.path)
        defs = build_definitions(
            spec,
            sensor_interval_seconds=self.sensor_interval_seconds,
            executor=dg.in_process_executor if self.in_process_executor else None,
            resources=self.resources(spec),
        )
        if self.translation is None:
            return defs
        return defs.permissive_map_resolved_asset_specs(self.translate, selection=None)


_SECTIONS = {
    "labels": LabelsAttributes,
    "windows": WindowsAttributes,
    "trainer": TrainerAttributes,
    "gate": GateAttributes,
    "fallback": FallbackAttributes,
    "store": StoreAttributes,
    "change_detection": ChangeDetectionAttributes,
}
"""The component's spec sections and the type each attribute holds."""


def spec_from_defs_yaml(path: Path) -> RetrainingSpec:
    """The :class:`RetrainingSpec` declared by the :class:`RetrainingComponent` in a ``defs.yaml``
    (see :func:`retraining_from_defs_yaml`)."""
    return retraining_from_defs_yaml(path)[0]


def retraining_from_defs_yaml(path: Path) -> tuple[RetrainingSpec, dict[str, Any]]:
    """(spec, resources) of the :class:`RetrainingComponent` in a ``defs.yaml``: what its
    ``build_defs`` gives ``build_definitions`` (resources: the ``mlflow:`` registry, if any).

    For tools outside Dagster (the CLI, scripts) that read the file a code location loads: same
    YAML parsing as Dagster (dates stay strings), same schema and rules, paths resolved against
    the file's folder, templates (``{{ env.X }}``) rendered with Dagster's default scope (``env``,
    ``dg``, ``datetime``; not the load context's ``context.*``).

    Raises:
        SpecError: the file is unreadable, declares no (or several) retraining components, or is invalid.
    """
    path = Path(path).resolve()
    try:
        documents = parse_yamls_with_source_position(path.read_text(), str(path))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from exc
    declared = [d for d in documents if isinstance(d.value, dict) and d.value.get("type") == TYPE_NAME]
    if len(declared) != 1:
        raise SpecError(f"{path} must declare exactly one {TYPE_NAME}, found {len(declared)}")
    context = dg.ResolutionContext.default(declared[0].source_position_tree).at_path("attributes")
    try:
        model = TypeAdapter(RetrainingComponent.get_model_cls()).validate_python(declared[0].value.get("attributes") or {})
        component = RetrainingComponent.resolve_from_model(context, model)
    except ValidationError as exc:
        raise attributes_error(context, exc, f"invalid retraining component in {path}:") from exc
    except SpecError:
        raise
    except ResolutionException as exc:
        raise SpecError(f"invalid retraining component in {path}: {exc}") from exc
    spec = component.to_spec(path.parent)
    return spec, component.resources(spec)
