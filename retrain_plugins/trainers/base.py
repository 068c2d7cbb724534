"""The trainer plugin interface and the shared fit-and-evaluate routine.

A trainer fits one binary classifier on a feature matrix, predicts probabilities, and saves and
loads its model in a native, non-pickle format. Built-in trainers are registered through the
``retrain_plugins.trainers`` entry-point group exactly as third-party trainers are.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.errors import DataError


class Trainer(abc.ABC):
    """Base class of trainers. Subclasses set ``name`` and ``suffix`` and implement the hooks.

    Attributes:
        name: Short name, the one the trainer is registered under in the entry-point group.
        suffix: File suffix of saved models, with its leading dot (``".cbm"``).
        defaults: Parameters used unless the spec's ``trainer.params`` overrides them.
        test_params: Parameters :mod:`retrain_plugins.testing` fits with (``{}``: the defaults);
            set them to keep the conformance checks fast, as sktime's estimator templates do.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}
    test_params: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None):
        self.params = {**self.defaults, **(params or {})}

    @abc.abstractmethod
    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Fit a fresh model on the rows in the given order (deterministically)."""

    #: Whether :meth:`continue_fit` is implemented (the ``warm_start`` strategy needs it).
    supports_warm_start: ClassVar[bool] = False

    def continue_fit(self, model: Any, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Continue training ``model`` on new rows only (warm start); optional."""
        raise NotImplementedError(f"trainer {self.name!r} does not support warm starts")

    def size(self, model: Any) -> int | None:
        """A model's size in the unit the ``max_trees`` cap counts (trees); ``None`` if unknown."""
        return None

    @abc.abstractmethod
    def predict_proba(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row."""

    @abc.abstractmethod
    def save(self, model: Any, path: Path) -> None:
        """Write the model to ``path`` in a native, non-pickle format."""

    @abc.abstractmethod
    def load(self, path: Path) -> Any:
        """Read a model written by :meth:`save`."""


class FitOutcome(NamedTuple):
    model: Any
    metrics: dict[str, float | int | None]
    seconds: float
    holdout: tuple[pl.DataFrame, np.ndarray]  # the newest rows the metrics were measured on


def holdout_size(rows: int, holdout_fraction: float) -> int:
    """Rows held out at the end of a time-ordered frame (none below 10 rows)."""
    return int(round(rows * holdout_fraction)) if rows >= 10 else 0


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` when the sample has a single class."""
    from sklearn.metrics import roc_auc_score  # deferred: importing sklearn.metrics takes ~1.3 s

    return float(roc_auc_score(labels, scores)) if len(labels) and len(np.unique(labels)) == 2 else None


def _clean(frame: pl.DataFrame, features: Sequence[str], label: str, where: str) -> tuple[pl.DataFrame, np.ndarray]:
    missing = [c for c in [*features, label] if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: training frame lacks columns {missing}")
    y = frame[label].cast(pl.Float64, strict=False).to_numpy()
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise DataError(f"{where}: label column {label!r} has {int(bad.sum())} values outside {{0, 1}}")
    x = frame.select(features).cast(pl.Float64, strict=False)
    infinite = {c: int(n) for c, n in zip(x.columns, np.isinf(x.to_numpy()).sum(axis=0)) if n}
    if infinite:
        raise DataError(f"{where}: infinite feature values (count per column): {infinite}")
    return x, y.astype(np.int64)


def fit_and_evaluate(
    trainer: Trainer,
    frame: pl.DataFrame,
    features: Sequence[str],
    label: str,
    holdout_fraction: float,
    where: str,
    init_model: Any = None,
    train_from: int = 0,
) -> FitOutcome:
    """Fit on the older rows, measure on the newest ``holdout_fraction`` (a time-based holdout).

    ``frame`` must already be in time order (training sets are sorted by label time). The model
    kept is the one fitted on the training part: its holdout metrics are honest. With
    ``init_model`` (warm start), training continues that model on rows ``train_from`` onwards only.
    """
    x, y = _clean(frame, features, label, where)
    n = len(y)
    n_hold = holdout_size(n, holdout_fraction)
    n_train = n - n_hold
    if n_train - train_from <= 0 or len(np.unique(y[train_from:n_train])) < 2:
        raise DataError(f"{where}: needs both label classes in its {n_train - train_from} training rows")
    started = time.perf_counter()
    part = x.slice(train_from, n_train - train_from)
    if init_model is None:
        model = trainer.fit(part, y[train_from:n_train])
    else:
        model = trainer.continue_fit(init_model, part, y[train_from:n_train])
    seconds = time.perf_counter() - started
    metrics: dict[str, float | int | None] = {
        "rows": n,
        "rows_train": n_train,
        "rows_holdout": n_hold,
        "label_rate": float(y.mean()),
        "auc_holdout": None,
        "logloss_holdout": None,
    }
    holdout = (x.tail(n_hold), y[n_train:])
    if n_hold and len(np.unique(y[n_train:])) == 2:
        p = trainer.predict_proba(model, holdout[0])
        metrics["auc_holdout"] = auc_or_none(y[n_train:], p)
        from sklearn.metrics import log_loss  # deferred, see auc_or_none

        metrics["logloss_holdout"] = float(log_loss(y[n_train:], p, labels=[0, 1]))
    return FitOutcome(model, metrics, seconds, holdout)
