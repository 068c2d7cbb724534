"""Drift: population stability index (PSI) of features and of the label between two samples.

Numeric features: PSI over quantile bins of the reference (NaN/null its own bin). Categorical
(string) features: PSI over category shares (null its own bin; categories unseen in the reference
share one bin). The label, by task: binary, PSI of the label rate (``label_rate``); regression,
PSI of label values over quantile bins (``label_values``); multiclass, PSI over class shares
(``label_classes``).

Used on a partition whose data changed: the new training rows against the rows its current
sub-model was trained on (or, for a partition never trained, the previous window's). A change
whose PSI exceeds the spec's threshold is reported with reason ``drift`` and its top features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.columns import is_categorical
from retrain_plugins.spec_changes import DriftSpec
from retrain_plugins.tasks import Task, resolve_task

_EPS = 1e-4
LABEL_RATE = "label_rate"
LABEL_SCORE: dict[str, str] = {"binary": LABEL_RATE, "regression": "label_values", "multiclass": "label_classes"}


class DriftResult(NamedTuple):
    drifted: bool
    scores: dict[str, float]  # feature (and the label, see LABEL_SCORE) -> PSI
    top: list[str]

    def describe(self) -> str:
        return ", ".join(f"{name} PSI {self.scores[name]:.2f}" for name in self.top)


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """PSI of ``current`` against quantile bins of ``reference`` (NaNs form a bin of their own)."""
    ref, cur = reference.astype(float), current.astype(float)
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref_ok.size:
        edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, bins + 1)[1:-1]))
    else:
        edges = np.array([])
    def shares(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, ok, side="right"), minlength=edges.size + 1)
        counts = np.append(counts, values.size - ok.size)  # the NaN bin
        return np.clip(counts / max(values.size, 1), _EPS, None)

    p, q = shares(ref, ref_ok), shares(cur, cur_ok)
    return float(np.sum((q - p) * np.log(q / p)))


def category_psi(reference: pl.Series, current: pl.Series) -> float:
    """PSI over category shares: one bin per reference category, one for nulls, one for unseen ones."""
    ref, cur = reference.cast(pl.String), current.cast(pl.String)
    known = sorted(ref.drop_nulls().unique().to_list())
    index = {c: i for i, c in enumerate(known)}

    def shares(values: pl.Series) -> np.ndarray:
        counts = np.zeros(len(known) + 2)
        for value, n in values.value_counts().iter_rows():
            counts[len(known) if value is None else index.get(value, len(known) + 1)] += n
        return np.clip(counts / max(values.len(), 1), _EPS, None)

    p, q = shares(ref), shares(cur)
    return float(np.sum((q - p) * np.log(q / p)))


def _label_psi(task: Task, reference: pl.Series, current: pl.Series, bins: int) -> float:
    if task == "multiclass":
        return category_psi(reference, current)
    as_float = (reference.cast(pl.Float64).to_numpy(), current.cast(pl.Float64).to_numpy())
    return psi(*as_float, 2 if task == "binary" else bins)


def detect_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str],
    label: str,
    spec: DriftSpec,
    task: Task | None = None,
) -> DriftResult | None:
    """PSI per feature and of the label; ``None`` when either sample is below ``min_rows``.

    Args:
        reference: What the model saw (or the previous window).
        current: The new training rows.
        features: Feature columns to score; string-typed ones are scored as categories.
        label: The label column.
        spec: Thresholds and bins.
        task: The label's task; ``None`` infers it from the reference's label type as ``auto`` does.

    Returns:
        Whether the highest PSI exceeds the threshold, every score (features, and the label under
        ``LABEL_SCORE[task]``), and the top names.
    """
    if not spec.enabled or reference.height < spec.min_rows or current.height < spec.min_rows:
        return None
    scores = {
        f: category_psi(reference[f], current[f])
        if is_categorical(reference.schema[f]) or is_categorical(current.schema[f])
        else psi(reference[f].cast(pl.Float64).to_numpy(), current[f].cast(pl.Float64).to_numpy(), spec.bins)
        for f in features
    }
    task = task or resolve_task("auto", reference.schema[label])
    scores[LABEL_SCORE[task]] = _label_psi(task, reference[label], current[label], spec.bins)
    top = sorted(scores, key=lambda name: -scores[name])[: spec.top]
    return DriftResult(scores[top[0]] > spec.threshold, scores, top)
