"""``dg scaffold defs retrain_plugins.dagster.component.RetrainingComponent <name>``: a commented defs.yaml.

The file is generated from the spec's models, so every field is in it with the spec's own
description: required ones with a value (a placeholder to adapt: columns, window start, the paths
to ``<project>/feature_repo`` and ``<project>/data``), optional ones commented out at their
defaults. Two values are left empty (``""``), so the file fails ``dg check defs`` naming them until
they are filled in: ``feature_service`` and ``labels.path``.
"""

from __future__ import annotations

import os
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster.components.component_scaffolding import scaffold_component
from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from retrain_plugins.spec import RetrainingSpec

__all__ = ["TO_FILL_IN", "RetrainingScaffolder", "ScaffoldParams", "defs_yaml_text"]

TYPE_NAME = "retrain_plugins.dagster.component.RetrainingComponent"
"""What ``type:`` says in a defs.yaml: the registered module and the class name."""

TO_FILL_IN = {
    "feature_service": "the Feast feature service of this model, e.g. churn_model_v1 (`feast feature-services list`)",
    "labels.path": "the label rows' parquet glob under data_dir, e.g. sources/labels/*/*.parquet (or an s3:// URL)",
}
"""Attributes the scaffold leaves empty (``dg check defs`` names them until filled in), with the hint it writes."""

PLACEHOLDER_NOTES = {
    "labels.entity_column": "placeholder: the label column holding the join key",
    "labels.timestamp_column": "placeholder",
    "labels.label_column": "placeholder",
    "labels.cohort_column": "placeholder",
    "windows.start": "placeholder: the first window of your data",
    "dynamic_cohorts": "or list them in cohorts: and remove this",
}
"""Inline comments on the values the scaffold guesses."""

_WIDTH = 100


class ScaffoldParams(BaseModel):
    """``dg scaffold defs ... <name> --feature-repo PATH --data-dir PATH`` (relative ones: to where dg runs)."""

    feature_repo: str | None = Field(default=None, description="Feast repo folder (default <project>/feature_repo).")
    data_dir: str | None = Field(default=None, description="Data folder (default <project>/data).")


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, date):
        value = value.isoformat()
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _comment(text: str | None, indent: str) -> list[str]:
    if not text:
        return []
    first = " ".join(text.split("\n\n")[0].split())
    return textwrap.wrap(first, width=_WIDTH - len(indent) - 2, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _section(model: type[BaseModel], values: dict[str, Any], prefix: str, indent: str, commented: bool) -> list[str]:
    """YAML lines for ``model``'s fields: given values set, required ones empty, optional ones commented out."""
    lines: list[str] = []
    mark = "# " if commented else ""
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        kind = info.annotation
        is_section = isinstance(kind, type) and issubclass(kind, BaseModel)
        description = info.description or (kind.__doc__ if is_section else None)
        lines.extend(_comment(description, indent))
        if dotted in TO_FILL_IN:
            lines.append(f'{indent}{mark}{name}: ""    # TO FILL IN: {TO_FILL_IN[dotted]}')
        elif dotted in values:
            note = f"    # {PLACEHOLDER_NOTES[dotted]}" if dotted in PLACEHOLDER_NOTES else ""
            lines.append(f"{indent}{mark}{name}: {_yaml_value(values[dotted])}{note}")
        elif is_section:
            nested_commented = commented or not info.is_required()
            lines.append(f"{indent}{'# ' if nested_commented else ''}{name}:")
            lines.extend(_section(kind, values, f"{dotted}.", indent + "  ", nested_commented))
        elif info.is_required():
            raise ValueError(f"the scaffold has no value for the required attribute {dotted}")
        else:
            default = info.default_factory() if info.default is PydanticUndefined else info.default  # type: ignore[call-arg]
            lines.append(f"{indent}# {name}: {_yaml_value(default)}")
    return lines


def _valid_name(folder: str) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in folder) or "retraining"
    return name if not name[0].isdigit() else f"r_{name}"


def defs_yaml_text(name: str, feature_repo: str, data_dir: str, today: date | None = None) -> str:
    """The scaffolded defs.yaml: ``name``, and the two paths as written (relative to the file's folder)."""
    start = (today or date.today()).replace(month=1, day=1)
    values = {
        "name": name,
        "feature_repo": feature_repo,
        "data_dir": data_dir,
        "labels.entity_column": "entity_id",
        "labels.timestamp_column": "event_timestamp",
        "labels.label_column": "label",
        "labels.cohort_column": "cohort",
        "windows.start": start.isoformat(),
        "dynamic_cohorts": True,
    }
    header = [
        f"# A retraining, scaffolded by `dg scaffold defs {TYPE_NAME} {name}`.",
        f"# Fill in {' and '.join(TO_FILL_IN)} (`dg check defs` names them until then), check the label",
        "# columns and the window start, then `dg check defs`. Relative paths resolve against this file's folder.",
        "# Commented-out attributes show their defaults. Dagster's `post_processing:` works here too, e.g.",
        "#   post_processing: {assets: [{target: 'key:" + name + "/model_bundle', attributes: {owners: [team:ml]}}]}",
        f"type: {TYPE_NAME}",
        "attributes:",
    ]
    body = _section(RetrainingSpec, values, "", "  ", commented=False)
    extras = [
        "  # Minimum seconds between two ticks of the change sensor.",
        "  # sensor_interval_seconds: 10",
        "  # Runs execute in one process; false leaves the executor to the code location (dagster-k8s, dagster-celery).",
        "  # in_process_executor: true",
        "  # Register promoted sub-models and the routed bundle in MLflow (README \"MLflow\"; retrain-plugins[mlflow]).",
        '  # mlflow: {tracking_uri: "{{ env.MLFLOW_TRACKING_URI }}"}',
        "  # Attributes of every asset (as in dagster-dbt / dagster-sling); templates see spec, retraining, asset_name.",
        "  # translation: {owners: [team:ml], tags: {tier: gold}, kinds: [catboost]}",
    ]
    return "\n".join([*header, *body, *extras]) + "\n"


class RetrainingScaffolder(dg.Scaffolder[ScaffoldParams]):
    """Writes the commented defs.yaml of :func:`defs_yaml_text` into the new defs folder."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        if request.scaffold_format != "yaml":
            scaffold_component(request, {})
            return
        root = Path(request.project_root or Path.cwd())
        folder = request.target_path.parent if request.append else request.target_path
        params = request.params or ScaffoldParams()

        def relative(given: str | None, default: Path) -> str:
            """An absolute path as given; else relative to the new folder (as the defs.yaml resolves it)."""
            if given and Path(given).is_absolute():
                return given
            target = (Path.cwd() / given) if given else default
            return Path(os.path.relpath(target.resolve(), folder.resolve())).as_posix()

        text = defs_yaml_text(
            _valid_name(folder.name),
            relative(params.feature_repo, root / "feature_repo"),
            relative(params.data_dir, root / "data"),
        )
        if request.append:
            with open(request.target_path, "a") as out:
                out.write("---\n" + text)
        else:
            (request.target_path / "defs.yaml").write_text(text)
