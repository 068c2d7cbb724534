"""``RetrainingComponent``: one retraining declared in a Dagster ``defs.yaml``.

The YAML attributes are :class:`~retrain_plugins.spec.RetrainingSpec`'s fields, so a
plain spec YAML moves into a defs folder unchanged under ``attributes:``::

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
      in_process_executor: true       # and whether runs execute in one process (see build_definitions)

``build_defs`` returns exactly ``build_definitions(spec)``: the Python factory and the component
produce the same assets, sensor and resources.

The attribute schema is derived from the spec (:func:`yaml_model`), so a field added to the spec
is a YAML attribute at once. Attributes are validated twice, both times naming the field: Dagster
checks types and unknown keys against the derived schema (its error names the key path and the
line in ``defs.yaml``), then the spec checks values (ranges, name pattern, unique cohorts,
``windows.end`` after ``windows.start``) and a :class:`~retrain_plugins.errors.SpecError` names
the file and each ``attributes.<field>``. Defaults and value rules live only in the spec.

Dagster finds the type through this package's ``dagster_dg_cli.registry_modules`` entry point
(``dg list components``). Each retraining has its own Feast resource (key ``<name>_feast``) and
storage (its ``store``), so several retraining components live in one code location.
"""

from datetime import date
from functools import cache
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union, get_args, get_origin

import dagster as dg
import yaml
from dagster_shared.yaml_utils import parse_yamls_with_source_position
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from retrain_plugins.dagster.definitions import build_definitions
from retrain_plugins.errors import SpecError
from retrain_plugins.spec import RetrainingSpec

__all__ = ["TYPE_NAME", "RetrainingComponent", "RetrainingComponentBase", "spec_from_defs_yaml", "yaml_model"]

TYPE_NAME = "retrain_plugins.dagster.component.RetrainingComponent"
"""What ``type:`` says in a defs.yaml: the registered module and the class name."""

NOT_SPEC_FIELDS = ("sensor_interval_seconds", "in_process_executor")
"""The component's attributes that are not :class:`RetrainingSpec` fields."""


def _yaml_type(annotation: Any) -> Any:
    """The YAML-side type of a spec field: dates and paths as strings, tuples as lists."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in (date, Path):
        return str
    if origin is Annotated:
        return _yaml_type(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return yaml_model(annotation)
    if origin is tuple:
        return list[_yaml_type(args[0])]
    if origin in (Union, UnionType):
        return Union[tuple(_yaml_type(a) for a in args)]  # noqa: UP007 - built from a tuple
    return annotation


def _yaml_fields(spec_model: type[BaseModel]) -> dict[str, tuple[Any, FieldInfo]]:
    """Each field of ``spec_model`` with its YAML-side type and description; optional ones default to None."""
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name, info in spec_model.model_fields.items():
        kind = _yaml_type(info.annotation)
        if info.is_required():
            fields[name] = (kind, Field(description=info.description))
        else:
            fields[name] = (Optional[kind], Field(default=None, description=info.description))  # noqa: UP045
    return fields


@cache
def yaml_model(spec_model: type[BaseModel]) -> type[BaseModel]:
    """The schema Dagster validates a nested spec section against, derived from ``spec_model``.

    Same field names and descriptions, YAML-side types (dates and paths are strings), unknown keys
    forbidden. Value constraints and defaults stay with the spec: every optional field is None
    here, and an unset field takes the spec's default. Dagster accepts only plain field types in
    nested pydantic models (no ``ge=`` constraints), hence the mirror.
    """
    return create_model(
        f"{spec_model.__name__}Attributes",
        __config__=ConfigDict(extra="forbid"),
        __doc__=spec_model.__doc__,
        **_yaml_fields(spec_model),
    )


def _problems(exc: ValidationError) -> str:
    """``attributes.<field path>: <message>`` for each error, as a defs.yaml author reads them."""
    return "; ".join(
        f"attributes.{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
    )


class RetrainingComponentBase(dg.Component, dg.Resolvable, dg.Model):
    """What :data:`RetrainingComponent` adds to the spec's fields: the sensor interval and the methods.

    Abstract (no ``build_defs``), so Dagster's registry lists only the concrete component.
    """

    if TYPE_CHECKING:  # fields of the concrete class, declared after the spec's fields
        sensor_interval_seconds: int
        in_process_executor: bool

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

    def spec_attributes(self) -> dict[str, Any]:
        """The attributes that make up the :class:`RetrainingSpec`, as plain data (unset ones left out)."""
        return self.model_dump(mode="json", exclude=set(NOT_SPEC_FIELDS), exclude_none=True)

    def to_spec(self, base_dir: Path) -> RetrainingSpec:
        """Validate the attributes as a :class:`RetrainingSpec` with paths resolved against ``base_dir``.

        Raises:
            SpecError: naming ``base_dir``'s defs.yaml and each offending ``attributes.<field>``.
        """
        try:
            return RetrainingSpec.model_validate(self.spec_attributes()).resolve(Path(base_dir))
        except ValidationError as exc:
            where = Path(base_dir) / "defs.yaml"
            raise SpecError(f"invalid retraining component in {where}: {_problems(exc)}") from exc


def _build_defs(self: RetrainingComponentBase, context: dg.ComponentLoadContext) -> dg.Definitions:
    """``build_definitions(spec)`` for the spec these attributes describe, paths relative to the defs.yaml."""
    return build_definitions(
        self.to_spec(context.path),
        sensor_interval_seconds=self.sensor_interval_seconds,
        executor=dg.in_process_executor if self.in_process_executor else None,
    )


def _component_class() -> type[RetrainingComponentBase]:
    fields = _yaml_fields(RetrainingSpec)
    fields["sensor_interval_seconds"] = (
        int,
        Field(
            default=10,
            description=(
                "Minimum seconds between two ticks of the change sensor (not a spec field). A tick "
                "with no change costs <= 0.3 s even at 1,008 partitions, so the default is short."
            ),
        ),
    )
    fields["in_process_executor"] = (
        bool,
        Field(
            default=True,
            description=(
                "Runs of this code location's assets execute in one process (Dagster's in_process_executor); "
                "false leaves the executor to the code location, e.g. dagster-k8s' or dagster-celery's on the "
                "top-level Definitions (not a spec field)."
            ),
        ),
    )
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": "RetrainingComponent",
        "__doc__": (
            "One partial retraining: Feast training sets and one sub-model per (window, cohort).\n\n"
            "Attributes: every field of :class:`~retrain_plugins.spec.RetrainingSpec` (relative "
            "``feature_repo`` and ``data_dir`` resolve against the defs.yaml's folder, ``labels.path`` "
            "against ``data_dir``), ``sensor_interval_seconds`` and ``in_process_executor``. Builds the assets "
            "``<name>/training_set``, ``<name>/sub_model`` (window x cohort partitions), "
            "``<name>/model_bundle``, the sensor ``<name>_change_sensor`` and the ``<name>_feast`` "
            "resource."
        ),
        "__annotations__": {name: kind for name, (kind, _) in fields.items()},
        **{name: info for name, (_, info) in fields.items()},
        "build_defs": _build_defs,
    }
    return type("RetrainingComponent", (RetrainingComponentBase,), namespace)


RetrainingComponent = _component_class()
"""The Dagster component type (``type: retrain_plugins.dagster.component.RetrainingComponent``)."""


def spec_from_defs_yaml(path: Path) -> RetrainingSpec:
    """The :class:`RetrainingSpec` declared by the :data:`RetrainingComponent` in a ``defs.yaml``.

    For tools outside Dagster (the CLI, scripts) that read the file a code location loads: same
    YAML parsing as Dagster (dates stay strings), same attribute schema, paths resolved against
    the file's folder, template expressions (``{{ env.X }}``) rendered as Dagster renders them.

    Raises:
        SpecError: the file is unreadable, declares no (or several) retraining components, or is invalid.
    """
    path = Path(path).resolve()
    try:
        documents = [tree.value for tree in parse_yamls_with_source_position(path.read_text(), str(path))]
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from exc
    declared = [d for d in documents if isinstance(d, dict) and d.get("type") == TYPE_NAME]
    if len(declared) != 1:
        raise SpecError(f"{path} must declare exactly one {TYPE_NAME}, found {len(declared)}")
    try:
        component = RetrainingComponent.from_attributes_dict(attributes=declared[0].get("attributes") or {})
    except ValidationError as exc:
        raise SpecError(f"invalid retraining component in {path}: {_problems(exc)}") from exc
    return component.to_spec(path.parent)
