"""RetrainingSpec: the declarative description of one retraining.

One spec says which Feast feature service feeds the model, where the labels are, how the data is
partitioned (time window x cohort), which trainer fits each sub-model, and where the retraining
keeps its state. It is validated on construction (pydantic); checks that need the Feast registry or
the data live in :func:`retrain_plugins.feast_view.resolve_feature_view` and
:func:`retrain_plugins.validation.check_label_source`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from retrain_plugins.errors import SpecError
from retrain_plugins.remote import is_remote, local_path
from retrain_plugins.spec_changes import ChangeDetection, DriftSpec, RetrySpec
from retrain_plugins.spec_data import LabelSource, Windows, _Model
from retrain_plugins.spec_training import FallbackSpec, GateSpec, TrainerSpec

__all__ = [
    "ChangeDetection", "DriftSpec", "FallbackSpec", "GateSpec", "LabelSource", "RetrainingSpec", "RetrySpec",
    "StoreSpec", "TrainerSpec", "Windows",
]


class StoreSpec(_Model):
    """Where a retraining keeps sub-models, training sets and its bundle, and how much history."""

    url: str | None = Field(
        default=None,
        description=(
            "Root of the retraining's storage: a local folder or any fsspec URL (s3://bucket/prefix, "
            "gs://..., az://...). models/<name>/ and training_sets/<name>/ live below it. Default: data_dir. "
            "Relative local paths resolve against the spec's folder."
        ),
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "fsspec storage options of the url (endpoint_url, region, anon...). Leave credentials to the "
            "backend's environment variables or config files rather than a spec in git."
        ),
    )

    keep_versions: int = Field(
        default=5,
        ge=1,
        description=(
            "Versions kept per partition, the current one included: a put deletes the artifacts of older "
            "ones (never a current, kept or bundled one). 'retrain rollback' reaches back this far."
        ),
    )



class RetrainingSpec(_Model):
    """One retraining: feature service x labels x partitions x trainer.

    Relative paths are resolved against ``base_dir`` (the folder of the YAML file, or the caller's
    choice in Python) by :meth:`resolve`.
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Asset key prefix and store name.")
    feature_repo: Path = Field(description="Folder holding feature_store.yaml.")
    feature_service: str = Field(description="Feast feature service that defines the features.")
    labels: LabelSource
    windows: Windows
    cohorts: tuple[str, ...] = Field(default=(), description="Cohort values, one sub-model each per window.")
    dynamic_cohorts: bool = Field(
        default=False,
        description="Cohorts are a Dagster dynamic dimension: a value new in the data adds its partitions.",
    )
    retrieval: Literal["feast", "duckdb_asof"] = Field(
        default="feast",
        description=(
            "How training sets are retrieved: through Feast's get_historical_features, or with a "
            "DuckDB ASOF join built from the same Feast definitions that pushes the window, cohort "
            "and entity filters down (identical frames, proven by tests; several times faster on "
            "long feature histories, see bench/RESULTS.md)."
        ),
    )
    task: Literal["auto", "binary", "multiclass", "regression"] = Field(
        default="auto",
        description=(
            "What the label is. 'auto' infers it from the label column's type: boolean or integer -> "
            "binary (0/1), string -> multiclass, floating point -> regression; set it for integer "
            "classes (multiclass) or integer amounts (regression)."
        ),
    )
    trainer: TrainerSpec = TrainerSpec()
    gate: GateSpec = GateSpec()
    fallback: FallbackSpec = FallbackSpec()
    store: StoreSpec = StoreSpec()
    change_detection: ChangeDetection = ChangeDetection()
    data_dir: Path = Field(description="Root of label sources, model store, training sets and state.")

    @field_validator("cohorts")
    @classmethod
    def _unique_cohorts(cls, cohorts: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(cohorts)) != len(cohorts):
            raise ValueError(f"cohorts must be unique, got {list(cohorts)}")
        if any(not c for c in cohorts):
            raise ValueError("cohorts must be non-empty strings")
        return tuple(sorted(cohorts))

    @model_validator(mode="after")
    def _some_cohorts(self) -> "RetrainingSpec":
        if not self.cohorts and not self.dynamic_cohorts:
            raise ValueError("cohorts must list at least one value unless dynamic_cohorts is true")
        return self

    def resolve(self, base_dir: Path) -> "RetrainingSpec":
        """Return a copy with ``feature_repo`` and ``data_dir`` made absolute against ``base_dir``."""
        base = Path(base_dir).resolve()
        return self.model_copy(
            update={
                "feature_repo": (base / self.feature_repo).resolve(),
                "data_dir": (base / self.data_dir).resolve(),
                "store": self.store.model_copy(update={"url": _resolved_url(self.store.url, base)}),
            }
        )

    @property
    def label_glob(self) -> str:
        """The label source's glob: ``labels.path`` against ``data_dir``, or the URL it is
        (``s3://bucket/labels/*/*.parquet``: any fsspec URL; ``file://`` URLs are local paths)."""
        if is_remote(self.labels.path):
            return self.labels.path
        path = Path(local_path(self.labels.path))
        return str(path if path.is_absolute() else self.data_dir / path)

    def definition_version(self) -> str:
        """Hash of everything that defines a sub-model but the data: its code version."""
        labels = self.labels.model_dump(exclude={"path", "entity_column", "entity_columns", "feature_columns"})
        # Fields added later enter the payload only when set, so an unchanged spec keeps its version.
        labels |= {"entity_column": self.labels.entity_column} if self.labels.entity_column else {"entity_columns": self.labels.keys}
        if self.labels.feature_columns:
            labels["feature_columns"] = list(self.labels.feature_columns)
        payload = {
            "feature_service": self.feature_service,
            "labels": labels,
            "lookback": self.windows.lookback,
            "trainer": self.trainer.model_dump(exclude={"strategy", "strategy_overrides", "max_trees", "allow_import"}),
        }
        if self.task != "auto":
            payload["task"] = self.task
        if self.windows.timezone != "UTC":
            payload["timezone"] = self.windows.timezone
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_yaml(cls, path: Path) -> "RetrainingSpec":
        """Load and validate a spec file; errors name the file and the field."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"cannot read retraining spec {path}: {exc}") from exc
        try:
            return cls.model_validate(raw).resolve(path.parent)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else "")
                for err in exc.errors()
            )
            raise SpecError(f"invalid retraining spec {path}: {problems}") from exc


def _resolved_url(url: str | None, base: Path) -> str | None:
    """A local store path made absolute against ``base``; URLs (``s3://...``) as they are."""
    if url is None or "://" in url:
        return url
    return str((base / url).resolve())
