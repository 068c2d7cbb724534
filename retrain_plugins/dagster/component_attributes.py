"""The YAML side of :class:`~retrain_plugins.dagster.component.RetrainingComponent`'s attributes.

Each nested section of the spec (``labels:``, ``windows:``, ``trainer:``...) is read through a
:class:`SpecSection`: a subclass of the spec's own pydantic model (so the resolved value *is* a
``LabelSource``, ``Windows``... with every validator) that is also a Dagster ``Resolvable``. Its
YAML schema is :func:`yaml_model`, derived field by field from the spec model, because Dagster
accepts only plain field types in a schema (no ``date``, no ``ge=`` constraints, no
``tuple[str, ...]``): dates and paths are strings there, tuples lists; value rules stay in the spec.

Errors name the attribute path and the defs.yaml line: Dagster's schema check for types and unknown
keys, :class:`AttributesError` for the spec's value rules (ranges, patterns, ``windows.end`` after
``windows.start``).
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import dagster as dg
from dagster.components.resolved.errors import ResolutionException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from retrain_plugins.errors import SpecError
from retrain_plugins.mlflow.resource import MLflowRegistryResource  # imports no mlflow
from retrain_plugins.spec import (
    ChangeDetection,
    FallbackSpec,
    GateSpec,
    LabelSource,
    StoreSpec,
    TrainerSpec,
    Windows,
)

__all__ = [
    "AttributesError",
    "ChangeDetectionAttributes",
    "FallbackAttributes",
    "GateAttributes",
    "LabelsAttributes",
    "MLFLOW_ATTRIBUTE",
    "SpecSection",
    "StoreAttributes",
    "TrainerAttributes",
    "WindowsAttributes",
    "attributes_error",
    "located",
    "refuse_empty",
    "yaml_model",
]


class AttributesError(SpecError, ResolutionException):
    """Invalid attributes in a defs.yaml; the message names each ``attributes.<path>`` and its line.

    A :class:`~retrain_plugins.errors.SpecError` for the library and the CLI, and a Dagster
    ``ResolutionException``, so Dagster prints it as it is (no resolver traceback).
    """


def located(context: dg.ResolutionContext, path: list[str | int]) -> str:
    """`` at <file>:<line>`` of ``path`` in the defs.yaml (its nearest written ancestor), or "" without a source."""
    tree = context.source_position_tree
    if tree is None:
        return ""
    position, _ = tree.lookup_closest_and_path(path, trace=None)
    return f" at {position.filename}:{position.start.line}"


_YAML_MESSAGES = {"tuple_type": "Input should be a valid list"}
"""pydantic messages that name a Python type where the YAML author sees another."""


def _yaml_loc(loc: tuple[str | int, ...]) -> tuple[list[str | int], bool]:
    """An error's attribute path without pydantic's union branch tags, and whether it came from the ``str`` branch.

    Dagster lets every attribute be a template string too (``labels: "{{ ... }}"``), so a wrong
    ``labels:`` mapping fails twice: as the mapping (``labels.LabelSourceAttributes.path``) and as
    a string (``labels.str``).
    """
    branch_tag = lambda p: isinstance(p, str) and (p == "str" or p[:1].isupper())  # noqa: E731
    return [p for p in loc if not branch_tag(p)], "str" in loc


def attributes_error(context: dg.ResolutionContext, exc: ValidationError, header: str) -> AttributesError:
    """One line per error: ``attributes.<path> at <defs.yaml>:<line>: <message> (got <value>)``."""
    errors = [(*_yaml_loc(err["loc"]), err) for err in exc.errors()]
    reported = {tuple(path) for path, from_str, _ in errors if not from_str}
    problems = []
    for loc, from_str, err in errors:
        if from_str and any(other[: len(loc)] == tuple(loc) for other in reported):
            continue  # the mapping's own errors say more than "Input should be a valid string"
        path = [*context.path, *loc]
        plain = err["type"] in ("missing", "value_error") or isinstance(err["input"], dict)
        got = "" if plain else f" (got {err['input']!r})"
        message = _YAML_MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")
        problems.append(f"  {'.'.join(str(p) for p in path)}{located(context, path)}: {message}{got}")
    return AttributesError("\n".join([header, *problems]))


def _empty(spec_model: type[BaseModel], values: dict[str, Any], path: list[str]) -> list[tuple[list[str], str]]:
    found = []
    for name, info in spec_model.model_fields.items():
        value, kind = values.get(name), info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(value, dict):
            found.extend(_empty(kind, value, [*path, name]))
        elif info.is_required() and kind is str and isinstance(value, str) and not value.strip():
            found.append(([*path, name], info.description or ""))
    return found


def refuse_empty(context: dg.ResolutionContext, spec_model: type[BaseModel], values: dict[str, Any]) -> None:
    """Refuse required text attributes left empty (as the scaffold leaves them), naming each, its line and meaning.

    Raises:
        AttributesError: one line per empty attribute: ``attributes.<path> at <file>:<line> is empty: <description>``.
    """
    lines = []
    for path, description in _empty(spec_model, values, [*map(str, context.path)]):
        meaning = re.split(r"(?<!e\.g)(?<!i\.e)\.(?:\s|$)", description)[0]
        lines.append(f"  {'.'.join(path)}{located(context, path)} is empty: {meaning}")
    if lines:
        raise AttributesError("\n".join(["attributes to fill in:", *lines]))


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


def _yaml_default(value: Any) -> Any:
    """A spec default as the YAML schema shows it (dates as strings, tuples as lists, sections as their schema)."""
    if isinstance(value, BaseModel):
        return yaml_model(type(value)).model_validate(value.model_dump(mode="json"))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _yaml_field(info: FieldInfo) -> tuple[Any, FieldInfo]:
    kind = _yaml_type(info.annotation)
    if info.is_required():
        return kind, Field(description=info.description)
    default = info.default_factory() if info.default is PydanticUndefined else info.default  # type: ignore[call-arg]
    return kind, Field(default=_yaml_default(default), description=info.description)


@cache
def yaml_model(spec_model: type[BaseModel]) -> type[BaseModel]:
    """The schema Dagster checks a spec section against in a defs.yaml, derived from ``spec_model``.

    Same field names, descriptions and defaults, YAML-side types, unknown keys forbidden. Only
    what the user wrote reaches the spec (``exclude_unset``), so the spec's defaults and value
    rules are the ones that apply; the defaults here are for editors and ``dg`` to show.
    """
    return create_model(
        f"{spec_model.__name__}Attributes",
        __config__=ConfigDict(extra="forbid"),
        __doc__=spec_model.__doc__,
        **{name: _yaml_field(info) for name, info in spec_model.model_fields.items()},
    )


class SpecSection(dg.Resolvable):
    """Mixin making a spec section readable from a defs.yaml: schema :func:`yaml_model`, templates rendered.

    ``class WindowsAttributes(Windows, SpecSection)``: the first base is the spec model.
    """

    @classmethod
    def spec_model(cls) -> type[BaseModel]:
        return cls.__bases__[0]

    @classmethod
    def model(cls) -> type[BaseModel]:
        return yaml_model(cls.spec_model())

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel):
        """Render ``{{ ... }}`` templates in what the user wrote, then validate it as the spec section."""
        written = context.resolve_value(model.model_dump(exclude_unset=True))
        try:
            return cls.model_validate(written)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise attributes_error(context, exc, "invalid retraining component attributes:") from None


class LabelsAttributes(LabelSource, SpecSection):
    """``labels:`` (see :class:`~retrain_plugins.spec.LabelSource`)."""


class WindowsAttributes(Windows, SpecSection):
    """``windows:`` (see :class:`~retrain_plugins.spec.Windows`)."""


class TrainerAttributes(TrainerSpec, SpecSection):
    """``trainer:`` (see :class:`~retrain_plugins.spec.TrainerSpec`)."""


class GateAttributes(GateSpec, SpecSection):
    """``gate:`` (see :class:`~retrain_plugins.spec.GateSpec`)."""


class FallbackAttributes(FallbackSpec, SpecSection):
    """``fallback:`` (see :class:`~retrain_plugins.spec.FallbackSpec`)."""


class StoreAttributes(StoreSpec, SpecSection):
    """``store:`` (see :class:`~retrain_plugins.spec.StoreSpec`)."""


class ChangeDetectionAttributes(ChangeDetection, SpecSection):
    """``change_detection:`` (see :class:`~retrain_plugins.spec.ChangeDetection`)."""


def _mlflow(context: dg.ResolutionContext, model: BaseModel | str) -> MLflowRegistryResource:
    """``mlflow:`` as the retraining's :class:`MLflowRegistryResource` (templates rendered: the
    fields', or one standing for the whole mapping)."""
    written = context.resolve_value(model.model_dump(exclude_unset=True) if isinstance(model, BaseModel) else model)
    if not isinstance(written, dict):
        where = located(context, list(context.path))
        raise AttributesError(f"  {'.'.join(map(str, context.path))}{where}: the MLflow registry's fields, not {written!r}")
    try:
        return MLflowRegistryResource(**written)
    except ValidationError as exc:
        raise attributes_error(context, exc, "invalid retraining component attributes:") from None


MLFLOW_ATTRIBUTE = dg.Resolver(
    _mlflow,
    model_field_type=yaml_model(MLflowRegistryResource),
    description=(
        "Mirror this retraining's promoted sub-models and routed bundle into MLflow (README \"MLflow\"): "
        "the fields of retrain_plugins.mlflow.MLflowRegistryResource, e.g. "
        "{tracking_uri: \"{{ env.MLFLOW_TRACKING_URI }}\"}; registered as the resource <name>_mlflow. "
        "Without it mlflow is never imported."
    ),
)
"""The ``mlflow:`` attribute: its schema is the resource's fields, its value the resource."""
