"""Drift: population stability index (PSI) of features and label rate between two samples.

Used on a partition whose data changed: the new training rows against the rows its current
sub-model was trained on (or, for a partition never trained, the previous window's). A change
whose PSI exceeds the spec's threshold is reported with reason ``drift`` and its top features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.spec import DriftSpec

_EPS = 1e-4
LABEL_RATE = "label_rate"


class DriftResult(NamedTuple):
    drifted: bool
    scores: dict[str, float]  # feature (and "label_rate") -> PSI
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


def detect_drift(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str], label: str, spec: DriftSpec
) -> DriftResult | None:
    """PSI per feature and of the label rate; ``None`` when either sample is below ``min_rows``."""
    if not spec.enabled or reference.height < spec.min_rows or current.height < spec.min_rows:
        return None
    scores = {
        f: psi(reference[f].cast(pl.Float64).to_numpy(), current[f].cast(pl.Float64).to_numpy(), spec.bins)
        for f in features
    }
    scores[LABEL_RATE] = psi(reference[label].cast(pl.Float64).to_numpy(), current[label].cast(pl.Float64).to_numpy(), 2)
    top = sorted(scores, key=lambda name: -scores[name])[: spec.top]
    return DriftResult(scores[top[0]] > spec.threshold, scores, top)
