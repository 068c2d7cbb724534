"""RetrainingSpec: the declarative description of one retraining.

One spec says which Feast feature service feeds the model, where the labels are, how the data is
partitioned (time window x cohort), which trainer fits each sub-model, and where the retraining
keeps its state. It is validated on construction (pydantic); checks that need the Feast registry or
the data live in :func:`retrain_plugins.feast_view.resolve_feature_view` and
:func:`retrain_plugins.training_sets.check_label_source`.
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
from retrain_plugins.spec_data import LabelSource, Windows, _Model

__all__ = [
    "ChangeDetection", "DriftSpec", "FallbackSpec", "GateSpec", "LabelSource", "RetrainingSpec", "RetrySpec",
    "StoreSpec", "TrainerSpec", "Windows",
]


Strategy = Literal["refit", "warm_start"]


class TrainerSpec(_Model):
    """Which trainer fits each sub-model, how, and how it is evaluated."""

    name: str = Field(default="catboost", description="Registered trainer name, or a dotted path with allow_import.")
    allow_import: bool = Field(
        default=False,
        description=(
            "Let `name` be a dotted path ('package.module:Class'): loading the spec then imports and "
            "runs that module's code. Off by default: only trainers registered as entry points."
        ),
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Trainer parameters.")
    holdout_fraction: float = Field(
        default=0.2, gt=0.0, lt=0.9, description="Newest share of label rows held out for metrics."
    )
    strategy: Strategy = Field(
        default="refit",
        description=(
            "'refit': a fresh model on the partition's training set. 'warm_start': continue the "
            "current sub-model on the rows that are new since it was trained (falls back to refit "
            "when there is no current model, old rows changed, the features changed, the trainer "
            "cannot continue, or max_trees would be exceeded)."
        ),
    )
    strategy_overrides: dict[str, Strategy] = Field(
        default_factory=dict, description="Per cohort ('north') or per partition ('2025-03-01/north')."
    )
    max_trees: int = Field(default=1000, ge=1, description="Cap on the trees of a warm-started model.")

    def strategy_for(self, window: str, cohort: str) -> Strategy:
        return self.strategy_overrides.get(f"{window}/{cohort}", self.strategy_overrides.get(cohort, self.strategy))


class GateSpec(_Model):
    """Champion/challenger: a candidate worse than the current sub-model is not promoted.

    Models are compared on the task's primary holdout metric: AUC (binary, higher is better),
    multi-class logloss (multiclass, lower is better), RMSE (regression, lower is better).
    """

    enabled: bool = True
    tolerance: float = Field(
        default=0.02,
        ge=0.0,
        description=(
            "Largest worsening of the primary holdout metric (candidate vs current) still promoted, in "
            "that metric's units: AUC points (binary), logloss (multiclass), RMSE in label units (regression)."
        ),
    )
    auc_floor: float = Field(default=0.5, ge=0.0, le=1.0, description="Asset check (binary): holdout AUC at least this.")
    metric_bound: float | None = Field(
        default=None,
        description=(
            "Asset check on the primary holdout metric: a minimum for higher-is-better metrics (AUC; "
            "overrides auc_floor), a maximum for lower-is-better ones (logloss, RMSE). Unset: binary "
            "uses auc_floor, other tasks check nothing."
        ),
    )

    def bound(self, task: str) -> float | None:
        """The asset check's bound on ``task``'s primary metric, if any."""
        if self.metric_bound is not None:
            return self.metric_bound
        return self.auc_floor if task == "binary" else None


class FallbackSpec(_Model):
    """The global model that serves cohorts without (or with too small) a sub-model."""

    enabled: bool = True
    windows: int = Field(default=3, ge=1, description="Trains on every cohort's rows of the newest N windows.")
    min_rows: int = Field(
        default=30, ge=0, description="Cohorts whose newest sub-model has fewer rows are served by the fallback."
    )


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


class DriftSpec(_Model):
    """Population stability (PSI) check of a changed partition against what its model saw."""

    enabled: bool = True
    threshold: float = Field(default=0.2, gt=0.0, description="PSI above which a change is reported as drift.")
    min_rows: int = Field(default=50, ge=2, description="Both samples need this many rows, or no drift is reported.")
    bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference sample.")
    top: int = Field(default=3, ge=1, description="How many drifting features to name.")


class RetrySpec(_Model):
    """How the sensor re-requests a partition whose data its model does not reflect yet."""

    max_attempts: int = Field(default=3, ge=1, description="Requests per partition and data (fingerprint), the first included.")
    backoff_seconds: float = Field(
        default=60.0, ge=0.0, description="Wait before the 2nd request of the same data; doubled for each further one."
    )


class ChangeDetection(_Model):
    """How the sensor treats changes that are not in the data."""

    definition_change: Literal["mark_stale", "retrain_all"] = Field(
        default="mark_stale",
        description=(
            "When the feature service, label definition or trainer parameters change: 'mark_stale' "
            "(default) lists affected sub-models as stale without retraining them; 'retrain_all' "
            "requests every partition that has data."
        ),
    )
    drift: DriftSpec = DriftSpec()
    retry: RetrySpec = Field(
        default_factory=RetrySpec,
        description=(
            "Every tick re-requests partitions whose data differs from what their model was trained "
            "on and that have no run in flight (a lost request, a failed or killed run): reason 'retry'."
        ),
    )
    full_check_every: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Every N-th sensor pass treats every source file as changed: re-inspects it, takes its "
            "content token and re-fingerprints every window (the fingerprints then decide, so "
            "identical data requests nothing). For sources whose file metadata (size, mtime, ctime, "
            "inode) cannot be trusted. Passes are counted in the state store (counter 'file_scan'). "
            "Default None: off."
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
