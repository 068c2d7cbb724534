"""Data and tools the trainer conformance checks (:mod:`retrain_plugins.testing`) fit with.

The data (:func:`make_dataset`) and the cases a trainer is fitted on (:func:`cases`); a pickle
guard (:func:`forbid_pickle`); and what every check is built from: an instance per case
(:func:`trainer_for`), predictions checked for the task (:func:`checked_predictions`), a saved
file (:func:`saved_file`), a check run over every case (:func:`per_case`).
"""

from __future__ import annotations

import contextlib
import functools
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from retrain_plugins.tasks import TASKS, Task
from retrain_plugins.trainers.base import Trainer

PICKLE_PROTO = 0x80  # first byte of every pickle of protocol 2 or higher
LABEL = "label"
CATEGORICAL = "color"  # the categorical column of make_dataset(categorical=True)
MIN_AUC = 0.65  # holdout AUC on make_dataset's signal; a working learner gets about 0.8
MIN_ACCURACY = 0.5  # multiclass holdout accuracy (chance: 1/3); a working learner gets about 0.65
MAX_RMSE_RATIO = 0.8  # regression holdout RMSE / label standard deviation; a working learner gets about 0.5
_COLOR_EFFECT = {"red": 1.2, "green": 0.0, "blue": -1.2, "violet": 0.4}


class Case(NamedTuple):
    """One configuration the checks fit: a task, with or without the categorical column."""

    task: Task
    categorical: bool

    def __str__(self) -> str:
        return f"[{self.task}{', categorical' if self.categorical else ''}]"


def make_dataset(
    n_rows: int = 480, seed: int = 0, task: Task = "binary", categorical: bool = False
) -> tuple[pl.DataFrame, np.ndarray]:
    """A deterministic, learnable problem of ``task`` with missing values.

    Args:
        n_rows: Number of rows.
        seed: Seed of the generator; the same arguments always give the same data.
        task: ``binary`` (int64 labels in {0, 1}), ``multiclass`` (string labels ``"a"``, ``"b"``,
            ``"c"``, as an object array) or ``regression`` (float64 values).
        categorical: Add the string column ``color`` (four categories, 10% null) that carries
            signal too.

    Returns:
        Float64 features ``signal`` (no NaN), ``inverse`` and ``noise`` (10% NaN) and ``sparse``
        (40% NaN, its missingness is informative), ``color`` when asked, and the labels. Without
        ``color``, the binary problem is the same as before tasks existed.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, 4))
    x[:, 1:3][rng.random((n_rows, 2)) < 0.1] = np.nan
    x[:, 3][rng.random(n_rows) < 0.4] = np.nan
    score = 2.0 * x[:, 0] - 1.2 * np.nan_to_num(x[:, 1]) + 0.8 * np.isnan(x[:, 3])
    frame = pl.DataFrame(x, schema=["signal", "inverse", "noise", "sparse"])
    if categorical:
        other = np.random.default_rng(seed + 7919)  # the numeric columns stay the same
        colors = other.choice(sorted(_COLOR_EFFECT), size=n_rows)
        color = [None if missing else str(c) for c, missing in zip(colors, other.random(n_rows) < 0.1)]
        score = score + np.array([_COLOR_EFFECT.get(c, 0.0) if c else 0.0 for c in color])
        frame = frame.with_columns(pl.Series(CATEGORICAL, color, dtype=pl.String))
    draw = np.random.default_rng(seed + 104729) if task != "binary" else rng
    if task == "binary":
        labels = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-score))).astype(np.int64)
    elif task == "regression":
        labels = score + draw.normal(scale=0.5, size=n_rows)
    else:
        utility = np.column_stack([np.zeros(n_rows), score, -score]) + draw.gumbel(size=(n_rows, 3))
        labels = np.array(["a", "b", "c"], dtype=object)[np.argmax(utility, axis=1)]
    return frame, labels


def cases(trainer_cls: type[Trainer]) -> list[Case]:
    """What the checks fit a trainer on: its first task (binary if declared) on numeric data, then
    each declared task, with the categorical column if the trainer supports categoricals."""
    declared = [t for t in TASKS if t in getattr(trainer_cls, "tasks", frozenset({"binary"}))] or ["binary"]
    with_cats = bool(getattr(trainer_cls, "supports_categorical", False))
    return list(dict.fromkeys([Case(declared[0], False), *(Case(t, with_cats) for t in declared)]))


@contextlib.contextmanager
def forbid_pickle() -> Iterator[list[str]]:
    """Make the ``pickle`` module's loaders refuse to run, recording every attempt.

    Patches ``pickle.load``, ``pickle.loads``, ``pickle.Unpickler`` and the pure-Python
    unpickler (used by joblib) for the duration; not thread-safe. Yields the list of attempts.
    """
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise pickle.UnpicklingError(f"{what} is forbidden while loading a model artifact")

        return refused

    targets: list[tuple[Any, str]] = [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (pickle, "_load"),
        (pickle, "_loads"),
        (pickle._Unpickler, "load"),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in targets]
    try:
        for owner, attr in targets:
            setattr(owner, attr, refuse(f"pickle {attr}"))
        yield attempts
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


Check = Callable[[type[Trainer], Mapping[str, Any] | None], None]
"""A conformance check: the trainer class and its params (``None``: its ``test_params``)."""


def require(condition: Any, message: str) -> None:
    """Fail the check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(message)


def trainer_for(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case = Case("binary", False)) -> Trainer:
    """A fresh instance of ``trainer_cls`` for ``case``, with ``params`` (``None``: its ``test_params``)."""
    chosen = dict(trainer_cls.test_params if params is None else params)
    if case == Case("binary", False):
        return trainer_cls(chosen)  # as make_trainer builds a trainer for binary, numeric data
    return trainer_cls(chosen, task=case.task, categorical=(CATEGORICAL,) if case.categorical else ())


def case_data(case: Case, n_rows: int = 480) -> tuple[pl.DataFrame, np.ndarray]:
    """:func:`make_dataset` for ``case``: its task, with or without the categorical column."""
    return make_dataset(n_rows, task=case.task, categorical=case.categorical)


def checked_predictions(trainer: Trainer, model: Any, features: pl.DataFrame, what: str) -> np.ndarray:
    """``trainer.predict``, checked for the task: type, dtype, shape, range; failures name ``what``."""
    p = trainer.predict(model, features)
    n = features.height
    require(isinstance(p, np.ndarray), f"{what}: predict returned {type(p).__name__}, not a numpy array")
    require(np.issubdtype(p.dtype, np.floating), f"{what}: predictions have dtype {p.dtype}, not float")
    if trainer.task == "multiclass":
        k = len(trainer.classes(model))
        require(p.shape == (n, k), f"{what}: predictions have shape {p.shape}, not ({n}, {k}) (one column per class)")
        require(np.all((p >= 0.0) & (p <= 1.0)), f"{what}: class probabilities outside [0, 1] (or NaN)")
        require(np.allclose(p.sum(axis=1), 1.0), f"{what}: class probabilities do not sum to 1")
    else:
        require(p.shape == (n,), f"{what}: predictions have shape {p.shape}, not ({n},)")
        if trainer.task == "binary":
            require(np.all((p >= 0.0) & (p <= 1.0)), f"{what}: predictions outside [0, 1] (or NaN)")
        else:
            require(np.all(np.isfinite(p)), f"{what}: predictions are not finite")
    return p


def saved_file(trainer: Trainer, model: Any, folder: Path, stem: str = "model") -> Path:
    """Save ``model`` as ``<folder>/<stem><suffix>`` and check that a non-empty file is there."""
    path = folder / f"{stem}{trainer.suffix}"
    trainer.save(model, path)
    require(path.is_file() and path.stat().st_size > 0, f"save wrote no file (or an empty one) at {path}")
    return path


def per_case(check: Callable[[type[Trainer], Mapping[str, Any] | None, Case], None]) -> Check:
    """Run ``check`` for every case of the trainer, prefixing failures with the case."""

    @functools.wraps(check)
    def run(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
        for case in cases(trainer_cls):
            try:
                check(trainer_cls, params, case)
            except AssertionError as exc:
                raise AssertionError(f"{case} {exc}") from exc

    return run
