"""The trainer plugin interface and the shared fit-and-evaluate routine.

A trainer fits one model of its task (binary, multiclass, regression; see
:mod:`retrain_plugins.tasks`) on a feature frame that may hold categorical (string) columns,
predicts, and saves and loads its model in a native, non-pickle format. Built-in trainers are
registered through the ``retrain_plugins.trainers`` entry-point group exactly as third-party
trainers are.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.columns import categorical_features
from retrain_plugins.errors import DataError
from retrain_plugins.tasks import METRICS, PRIMARY, Task, distinct_labels, label_array, roc_auc, score, validate_labels


class Trainer(abc.ABC):
    """Base class of trainers. Subclasses set ``name`` and ``suffix`` and implement the hooks.

    A trainer instance is configured for one task and one set of categorical columns
    (:func:`retrain_plugins.trainers.make_trainer` passes them): ``self.task`` and
    ``self.categorical``. ``fit`` receives a polars frame whose categorical columns are
    ``pl.String`` (nulls kept) and whose other columns are ``pl.Float64`` (NaN for missing), and
    the labels as :func:`retrain_plugins.tasks.label_array` gives them (int64 0/1, class labels,
    float64 values). ``predict`` may receive the raw columns (any numeric types, strings, extra
    columns); it must read what it needs off the model, never off the batch.

    A binary-only trainer written before tasks existed keeps working unchanged: it implements
    ``fit``/``predict_proba``/``save``/``load``, declares nothing, and is refused for other tasks
    and for categorical data.

    Attributes:
        name: Short name, the one the trainer is registered under in the entry-point group.
        suffix: File suffix of saved models, with its leading dot (``".cbm"``).
        defaults: Parameters used unless the spec's ``trainer.params`` overrides them.
        test_params: Parameters :mod:`retrain_plugins.testing` fits with (``{}``: the defaults);
            set them to keep the conformance checks fast, as sktime's estimator templates do.
        tasks: The tasks the trainer can fit (default: ``binary`` only).
        library: The distribution the trainer fits with (``"catboost"``); optional. When set, a
            passed :meth:`check_params` is remembered per version of it (see
            :func:`retrain_plugins.trainers.check_trainer_spec`).
        supports_categorical: Whether ``fit`` accepts string (categorical) feature columns.
        task: The task this instance fits (set by ``__init__``).
        categorical: The categorical feature columns this instance fits on, by name.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}
    test_params: ClassVar[Mapping[str, Any]] = {}
    tasks: ClassVar[frozenset[str]] = frozenset({"binary"})
    supports_categorical: ClassVar[bool] = False
    library: ClassVar[str | None] = None
    task: Task = "binary"
    categorical: tuple[str, ...] = ()

    def __init__(
        self, params: Mapping[str, Any] | None = None, *, task: Task = "binary", categorical: Sequence[str] = ()
    ):
        self.params = {**self.defaults, **(params or {})}
        self.task = task
        self.categorical = tuple(categorical)

    @abc.abstractmethod
    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Fit a fresh model on the rows in the given order (deterministically)."""

    #: Whether :meth:`continue_fit` is implemented (the ``warm_start`` strategy needs it).
    supports_warm_start: ClassVar[bool] = False

    def continue_fit(self, model: Any, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Continue training ``model`` on new rows only (warm start); optional."""
        raise NotImplementedError(f"trainer {self.name!r} does not support warm starts")

    def check_params(self) -> None:
        """Raise ``TypeError``/``ValueError`` if ``self.params`` cannot fit a model; optional.

        Called when definitions load and by the sensor before it requests a run, so a typo in a
        parameter fails there, not in a run after the sensor has moved on. The default accepts
        everything.
        """

    def size(self, model: Any) -> int | None:
        """A model's size in the unit the ``max_trees`` cap counts (trees); ``None`` if unknown."""
        return None

    @abc.abstractmethod
    def predict_proba(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row (binary models)."""

    def predict(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        """The model's output for each row, by task.

        Returns:
            binary: P(class 1), shape (n,); multiclass: class probabilities, shape (n, k), columns
            in the order of :meth:`classes`; regression: predicted values, shape (n,). The default
            serves binary trainers through :meth:`predict_proba`.
        """
        if self.task != "binary":
            raise NotImplementedError(f"trainer {self.name!r} does not implement predict for task {self.task!r}")
        return self.predict_proba(model, features)

    def classes(self, model: Any) -> list[Any]:
        """The class labels of a (multiclass) model, in the order of :meth:`predict`'s columns.

        Read off the model itself, so a loaded model knows them. Binary: ``[0, 1]``; regression: ``[]``.
        """
        if self.task == "binary":
            return [0, 1]
        if self.task == "regression":
            return []
        raise NotImplementedError(f"trainer {self.name!r} does not implement classes")

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
    """ROC AUC, or ``None`` when the sample has a single class (:func:`retrain_plugins.tasks.roc_auc`:
    scikit-learn's value, computed with numpy)."""
    return roc_auc(labels, scores)


def model_frame(frame: pl.DataFrame, features: Sequence[str], categorical: Sequence[str]) -> pl.DataFrame:
    """The feature columns as trainers receive them: categorical ones ``pl.String``, others ``pl.Float64``."""
    cats = set(categorical)
    return frame.select(
        [pl.col(c).cast(pl.String) if c in cats else pl.col(c).cast(pl.Float64, strict=False) for c in features]
    )


def _clean(
    frame: pl.DataFrame, features: Sequence[str], label: str, where: str, trainer: Trainer
) -> tuple[pl.DataFrame, np.ndarray]:
    missing = [c for c in [*features, label] if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: training frame lacks columns {missing}")
    untold = [c for c in categorical_features(frame, features) if c not in trainer.categorical]
    if untold:
        raise DataError(
            f"{where}: feature columns {untold} are categorical (strings) but trainer {trainer.name!r} was not "
            "configured with them: make_trainer(..., categorical=categorical_features(frame, features))"
        )
    validate_labels(trainer.task, frame[label], where)
    y = label_array(trainer.task, frame[label])
    x = model_frame(frame, features, trainer.categorical)
    numeric = [c for c in features if c not in trainer.categorical]
    values = x.select(numeric).to_numpy() if numeric else np.zeros((x.height, 0))
    infinite = {c: int(n) for c, n in zip(numeric, np.isinf(values).sum(axis=0)) if n}
    if infinite:
        raise DataError(f"{where}: infinite feature values (count per column): {infinite}")
    return x, y


def evaluate(trainer: Trainer, model: Any, features: pl.DataFrame, labels: np.ndarray) -> dict[str, float | None]:
    """``model``'s metrics of ``trainer.task`` on these rows: ``{"<metric>_holdout": value}``.

    Also ``metric`` (the primary metric's name) and ``metric_holdout`` (its value), so a caller
    compares models without knowing the task. Values are ``None`` when undefined (no rows, one
    class for AUC).
    """
    metric = PRIMARY[trainer.task]
    scores: dict[str, Any] = {name: None for name in METRICS[trainer.task]}
    if len(labels):
        predictions = trainer.predict(model, features)
        classes = trainer.classes(model) if trainer.task == "multiclass" else None
        scores = score(trainer.task, labels, predictions, classes)
    return {
        **{f"{name}_holdout": value for name, value in scores.items()},
        "metric": metric.name,
        "metric_holdout": scores[metric.name],
    }


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
    The task and categorical columns are the trainer's (``trainer.task``, ``trainer.categorical``).

    Returns:
        The model, its metrics and the holdout. Metrics: ``rows``, ``rows_train``,
        ``rows_holdout``, ``task``-specific ``<metric>_holdout`` values (binary ``auc_holdout``,
        ``logloss_holdout``; multiclass ``logloss_holdout``, ``accuracy_holdout``; regression
        ``rmse_holdout``, ``mae_holdout``), ``metric``/``metric_holdout`` (the primary one),
        ``label_rate`` (binary: share of 1s; else ``None``), ``label_mean`` (regression) and
        ``n_classes`` (multiclass, in the training part).

    Raises:
        DataError: Unusable labels or features, or a training part with fewer than two classes
            (classification) or distinct values (regression).
    """
    x, y = _clean(frame, features, label, where, trainer)
    n = len(y)
    n_hold = holdout_size(n, holdout_fraction)
    n_train = n - n_hold
    train_y = y[train_from:n_train]
    if n_train - train_from <= 0 or distinct_labels(trainer.task, train_y) < 2:
        what = "distinct label values" if trainer.task == "regression" else "label classes"
        raise DataError(f"{where}: needs at least two {what} in its {max(n_train - train_from, 0)} training rows")
    started = time.perf_counter()
    part = x.slice(train_from, n_train - train_from)
    if init_model is None:
        model = trainer.fit(part, train_y)
    else:
        model = trainer.continue_fit(init_model, part, train_y)
    seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {
        "rows": n,
        "rows_train": n_train,
        "rows_holdout": n_hold,
        "label_rate": float(y.mean()) if trainer.task == "binary" else None,
    }
    if trainer.task == "regression":
        metrics["label_mean"] = float(y.mean())
    if trainer.task == "multiclass":
        metrics["n_classes"] = distinct_labels(trainer.task, y[:n_train])
    holdout = (x.tail(n_hold), y[n_train:])
    scores = evaluate(trainer, model, *holdout)
    if trainer.task == "binary" and scores["auc_holdout"] is None:
        scores["logloss_holdout"] = None  # as before tasks: no metrics on a single-class holdout
    metrics.update(scores)
    return FitOutcome(model, metrics, seconds, holdout)
