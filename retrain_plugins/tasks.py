"""Learning tasks: what a label is, how it is validated, and how a model of it is scored.

A retraining's task is ``binary`` (labels 0/1 or booleans; the model gives P(class 1)),
``multiclass`` (any number of classes, strings or integers; the model gives one probability per
class) or ``regression`` (finite numbers; the model gives values). ``spec.task: auto`` infers it
from the label column's polars type (:func:`resolve_task`).

Each task has a primary metric, measured on the time-based holdout, that the champion/challenger
gate and the asset checks compare (:data:`PRIMARY`): binary ``auc`` (higher is better), multiclass
``logloss`` (multi-class log loss, lower is better), regression ``rmse`` (lower is better).
:func:`score` computes a task's metrics from labels and predictions without scikit-learn (numpy
only: importing ``sklearn.metrics`` costs seconds in every run process, for one AUC).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import numpy as np
import polars as pl

from retrain_plugins.errors import DataError

if TYPE_CHECKING:
    from retrain_plugins.spec import RetrainingSpec

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = get_args(Task)
_LOGLOSS_EPS = 1e-15  # probabilities are clipped to [eps, 1 - eps], as scikit-learn's log_loss does


class Metric(NamedTuple):
    """A task's primary metric: its name (``auc_holdout`` is metric ``auc``), label, and direction."""

    name: str
    label: str
    higher_is_better: bool

    def better(self, candidate: float, reference: float, tolerance: float = 0.0) -> bool:
        """Whether ``candidate`` is no worse than ``reference`` by more than ``tolerance``."""
        if self.higher_is_better:
            return candidate >= reference - tolerance
        return candidate <= reference + tolerance


PRIMARY: dict[Task, Metric] = {
    "binary": Metric("auc", "AUC", True),
    "multiclass": Metric("logloss", "multi-class logloss", False),
    "regression": Metric("rmse", "RMSE", False),
}
#: Every metric a task reports on the holdout (``<name>_holdout`` keys), the primary one first.
METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("auc", "logloss"),
    "multiclass": ("logloss", "accuracy"),
    "regression": ("rmse", "mae"),
}


def _is_integer(dtype: pl.DataType) -> bool:
    return dtype.is_integer()


def resolve_task(spec: "RetrainingSpec | str", label_dtype: pl.DataType) -> Task:
    """The task of a retraining: the spec's explicit ``task``, or one inferred from the label type.

    Args:
        spec: The retraining spec (or its ``task`` value: ``auto`` or a :data:`Task`).
        label_dtype: The polars type of the label column in the training set.

    Returns:
        ``binary`` for Boolean and integer labels (their values must be 0/1, see
        :func:`validate_labels`), ``multiclass`` for String/Categorical/Enum labels, ``regression``
        for floating-point labels; the spec's task when it is not ``auto``.

    Raises:
        DataError: ``auto`` and a label type none of these covers.
    """
    task = spec if isinstance(spec, str) else spec.task
    if task != "auto":
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; expected one of {list(TASKS)} or 'auto'")
        return task  # type: ignore[return-value]
    if label_dtype == pl.Boolean or _is_integer(label_dtype):
        return "binary"
    if label_dtype == pl.String or isinstance(label_dtype, (pl.Categorical, pl.Enum)) or label_dtype in (pl.Categorical, pl.Enum):
        return "multiclass"
    if label_dtype.is_float():
        return "regression"
    raise DataError(
        f"cannot infer the task from a label column of type {label_dtype}: set `task:` in the spec "
        f"to one of {list(TASKS)}"
    )


def label_array(task: Task, labels: pl.Series) -> np.ndarray:
    """The label column as the array trainers receive: int64 0/1, class labels, or float64 values."""
    if task == "binary":
        return labels.cast(pl.Float64, strict=False).to_numpy().astype(np.int64)
    if task == "regression":
        return labels.cast(pl.Float64, strict=False).to_numpy()
    if labels.dtype == pl.String or not labels.dtype.is_numeric():
        return np.asarray(labels.cast(pl.String).to_list(), dtype=object)
    return labels.to_numpy()


def validate_labels(task: Task, labels: pl.Series, where: str) -> None:
    """Refuse labels the task cannot learn from, naming ``where`` (the partition) and the column.

    binary: only 0/1 (or booleans), no nulls; multiclass: no nulls; regression: finite numbers,
    no nulls. (That a multiclass training part holds two classes is checked where it is split.)

    Raises:
        DataError: Saying how many values are bad, and for integer labels that are not 0/1, how to
            set the task instead.
    """
    column = labels.name
    if task == "binary":
        values = labels.cast(pl.Float64, strict=False)
        bad = values.is_null() | values.is_nan() | ~values.is_in([0.0, 1.0])
        if bad.any():
            raise DataError(
                f"{where}: label column {column!r} has {int(bad.sum())} values outside {{0, 1}}; for classes "
                "or amounts set `task: multiclass` or `task: regression` in the spec"
            )
    elif task == "multiclass":
        nulls = labels.null_count()
        if nulls:
            raise DataError(f"{where}: label column {column!r} has {nulls} null class labels")
    else:
        if not (labels.dtype.is_numeric() or labels.dtype == pl.Boolean):
            raise DataError(f"{where}: label column {column!r} has type {labels.dtype}, not numbers (regression)")
        values = labels.cast(pl.Float64)
        bad = values.is_null() | ~values.is_finite().fill_null(False)
        if bad.any():
            raise DataError(f"{where}: label column {column!r} has {int(bad.sum())} null or non-finite values")


def distinct_labels(task: Task, labels: np.ndarray) -> int:
    """Number of distinct label values (classes, or values for regression)."""
    return len(np.unique(labels)) if len(labels) else 0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of binary ``labels`` (1 is the positive class) ranked by ``scores``; ``None`` with one class.

    The arithmetic of scikit-learn's ``roc_auc_score`` step by step (distinct score thresholds in
    descending order, cumulative true/false positives, collinear points dropped, trapezoidal area),
    so the value is the same float, without importing ``sklearn.metrics`` (seconds here).
    """
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"labels and scores differ in length ({len(y)} vs {len(s)})")
    if not len(y) or len(np.unique(y)) != 2:
        return None
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    order = np.argsort(s, kind="stable")[::-1]
    s, positive = s[order], (y[order] == 1).astype(np.float64)
    thresholds = np.concatenate([np.nonzero(np.diff(s))[0], [len(s) - 1]])
    tps = np.cumsum(positive, dtype=np.float64)[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    if len(fps) > 2:  # drop points on a straight line between their neighbours (roc_curve's drop_intermediate)
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        fps, tps = fps[keep], tps[keep]
    fpr = np.concatenate([[0.0], fps]) / fps[-1]
    tpr = np.concatenate([[0.0], tps]) / tps[-1]
    return float(np.add.reduce(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def score(task: Task, labels: np.ndarray, predictions: np.ndarray, classes: list[Any] | None = None) -> dict[str, float | None]:
    """The task's holdout metrics (``METRICS[task]``, each ``None`` when undefined on the sample).

    Args:
        task: The task.
        labels: True labels, as :func:`label_array` gives them.
        predictions: The trainer's ``predict`` output: P(1), (n, k) probabilities, or values.
        classes: For multiclass, the class of each probability column.

    Returns:
        ``{metric: value}``: binary ``auc`` (None with a single class) and ``logloss``;
        multiclass ``logloss`` (a class the model does not know counts as probability eps) and
        ``accuracy``; regression ``rmse`` and ``mae``. All ``None`` for an empty sample.
    """
    if not len(labels):
        return {name: None for name in METRICS[task]}
    if task == "binary":
        p = np.clip(predictions.astype(np.float64), _LOGLOSS_EPS, 1 - _LOGLOSS_EPS)
        y = labels.astype(np.float64)
        auc = roc_auc(labels, predictions)
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if auc is not None else None
        return {"auc": auc, "logloss": logloss}
    if task == "regression":
        error = predictions.astype(np.float64) - labels.astype(np.float64)
        return {"rmse": float(math.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    known = list(classes or [])
    index = {c: i for i, c in enumerate(known)}
    proba = np.clip(predictions.astype(np.float64), _LOGLOSS_EPS, 1 - _LOGLOSS_EPS)
    proba = proba / proba.sum(axis=1, keepdims=True)
    picked = np.array([proba[row, index[y]] if y in index else _LOGLOSS_EPS for row, y in enumerate(labels.tolist())])
    best = np.asarray(known, dtype=object)[np.argmax(predictions, axis=1)]
    accuracy = float(np.mean([b == y for b, y in zip(best.tolist(), labels.tolist())]))
    return {"logloss": float(-np.mean(np.log(picked))), "accuracy": accuracy}
