"""The model side of a retraining spec: which trainer fits each sub-model, the gate, the fallback.

Part of :class:`retrain_plugins.spec.RetrainingSpec` (which re-exports these models).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from retrain_plugins.spec_data import _Model


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
