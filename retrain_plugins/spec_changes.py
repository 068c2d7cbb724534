"""The sensor side of a retraining spec: drift, retries, definition changes, full checks.

Part of :class:`retrain_plugins.spec.RetrainingSpec` (which re-exports these models) as its
``change_detection`` section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retrain_plugins.spec_data import _Model


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
