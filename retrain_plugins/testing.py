"""Conformance checks a trainer plugin must pass, for built-in and third-party trainers alike.

Run them all from a plugin's own test suite::

    from retrain_plugins.testing import check_trainer

    def test_my_trainer_conforms():
        check_trainer(MyTrainer)

or one by one (``CHECKS``), e.g. parametrized with pytest. Every check takes the trainer class
and optional params (default: the class's ``test_params``), fits on :func:`make_dataset`, and
raises ``AssertionError`` naming what is wrong. Each check runs for every :func:`cases` entry of
the trainer: binary on numeric data (what every trainer must do), and every task the trainer
declares in ``tasks``, with the categorical column ``color`` when it declares
``supports_categorical``; a failure names the case (``[multiclass, categorical] ...``). A check
fits at most twice per case on a few hundred rows.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrain_plugins.tasks import METRICS, PRIMARY, TASKS, score
from retrain_plugins.testing_support import (
    CATEGORICAL,
    LABEL,
    MAX_RMSE_RATIO,
    MIN_ACCURACY,
    MIN_AUC,
    PICKLE_PROTO,
    Case,
    cases,
    forbid_pickle,
    make_dataset,
)
from retrain_plugins.trainers.base import Trainer, fit_and_evaluate

Check = Callable[[type[Trainer], Mapping[str, Any] | None], None]


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _trainer(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case = Case("binary", False)) -> Trainer:
    chosen = dict(trainer_cls.test_params if params is None else params)
    if case == Case("binary", False):
        return trainer_cls(chosen)  # as make_trainer builds a trainer for binary, numeric data
    return trainer_cls(chosen, task=case.task, categorical=(CATEGORICAL,) if case.categorical else ())


def _data(case: Case, n_rows: int = 480) -> tuple[pl.DataFrame, np.ndarray]:
    return make_dataset(n_rows, task=case.task, categorical=case.categorical)


def _predictions(trainer: Trainer, model: Any, features: pl.DataFrame, what: str) -> np.ndarray:
    p = trainer.predict(model, features)
    n = features.height
    _require(isinstance(p, np.ndarray), f"{what}: predict returned {type(p).__name__}, not a numpy array")
    _require(np.issubdtype(p.dtype, np.floating), f"{what}: predictions have dtype {p.dtype}, not float")
    if trainer.task == "multiclass":
        k = len(trainer.classes(model))
        _require(p.shape == (n, k), f"{what}: predictions have shape {p.shape}, not ({n}, {k}) (one column per class)")
        _require(np.all((p >= 0.0) & (p <= 1.0)), f"{what}: class probabilities outside [0, 1] (or NaN)")
        _require(np.allclose(p.sum(axis=1), 1.0), f"{what}: class probabilities do not sum to 1")
    else:
        _require(p.shape == (n,), f"{what}: predictions have shape {p.shape}, not ({n},)")
        if trainer.task == "binary":
            _require(np.all((p >= 0.0) & (p <= 1.0)), f"{what}: predictions outside [0, 1] (or NaN)")
        else:
            _require(np.all(np.isfinite(p)), f"{what}: predictions are not finite")
    return p


def _saved(trainer: Trainer, model: Any, folder: Path, stem: str = "model") -> Path:
    path = folder / f"{stem}{trainer.suffix}"
    trainer.save(model, path)
    _require(path.is_file() and path.stat().st_size > 0, f"save wrote no file (or an empty one) at {path}")
    return path


def _per_case(check: Callable[[type[Trainer], Mapping[str, Any] | None, Case], None]) -> Check:
    """Run ``check`` for every case of the trainer, prefixing failures with the case."""

    @functools.wraps(check)
    def run(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
        for case in cases(trainer_cls):
            try:
                check(trainer_cls, params, case)
            except AssertionError as exc:
                raise AssertionError(f"{case} {exc}") from exc

    return run


def check_declarations(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """The class is a concrete Trainer declaring ``name``, ``suffix``, ``defaults``, ``test_params`` and ``tasks``."""
    is_trainer = isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)
    _require(is_trainer, f"{trainer_cls!r} is not a Trainer subclass")
    _require(not inspect.isabstract(trainer_cls), f"{trainer_cls.__qualname__} leaves abstract methods unimplemented")
    name, suffix = getattr(trainer_cls, "name", None), getattr(trainer_cls, "suffix", None)
    _require(isinstance(name, str) and name and name == "".join(name.split()), f"name must be a word, got {name!r}")
    ok_suffix = isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1
    _require(ok_suffix, f"suffix must look like '.ext', got {suffix!r}")
    _require(isinstance(trainer_cls.defaults, Mapping), "defaults must be a mapping")
    _require(isinstance(trainer_cls.test_params, Mapping), "test_params must be a mapping")
    tasks = getattr(trainer_cls, "tasks", None)
    _require(isinstance(tasks, frozenset) and tasks, f"tasks must be a non-empty frozenset, got {tasks!r}")
    unknown = sorted(set(tasks) - set(TASKS))
    _require(not unknown, f"tasks names unknown tasks {unknown}; known: {list(TASKS)}")
    for case in cases(trainer_cls):
        try:
            trainer = _trainer(trainer_cls, params, case)
        except TypeError as exc:
            raise AssertionError(f"{case} __init__ must accept task= and categorical= keywords: {exc}") from exc
        missing = [k for k in trainer_cls.defaults if k not in trainer.params]
        _require(not missing, f"instance params lack defaults {missing}; call Trainer.__init__")
        wanted = (case.task, (CATEGORICAL,) if case.categorical else ())
        _require((trainer.task, trainer.categorical) == wanted, f"{case} the instance has task/categorical "
                 f"{(trainer.task, trainer.categorical)}, not {wanted}; pass them to Trainer.__init__")


def _quality(case: Case, trainer: Trainer, model: Any, labels: np.ndarray, p: np.ndarray) -> None:
    classes = trainer.classes(model) if case.task == "multiclass" else None
    got = score(case.task, labels, p, classes)
    if case.task == "binary":
        _require(got["auc"] >= MIN_AUC, f"holdout AUC {got['auc']:.3f} < {MIN_AUC} on a learnable signal: not learning")
    elif case.task == "multiclass":
        _require(sorted(classes) == ["a", "b", "c"], f"classes(model) is {classes!r}, not the classes ['a', 'b', 'c']")
        ok = got["accuracy"] >= MIN_ACCURACY
        _require(ok, f"holdout accuracy {got['accuracy']:.3f} < {MIN_ACCURACY} on a learnable signal: not learning")
    else:
        ratio = got["rmse"] / float(np.std(labels))
        _require(ratio <= MAX_RMSE_RATIO, f"holdout RMSE is {ratio:.2f} x the label spread (> {MAX_RMSE_RATIO}): not learning")


@_per_case
def check_fit_predict(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Fits on rows with NaNs (and null categories); predictions are valid for the task, learn the
    signal, ignore batch composition, and survive unseen categories."""
    features, labels = _data(case)
    n_train = features.height * 3 // 4
    trainer = _trainer(trainer_cls, params, case)
    model = trainer.fit(features.head(n_train), labels[:n_train])
    holdout = features.tail(features.height - n_train)
    p = _predictions(trainer, model, holdout, "holdout")
    _quality(case, trainer, model, labels[n_train:], p)
    parts = np.concatenate([_predictions(trainer, model, holdout.slice(s, 7), "subset") for s in (0, 7)])
    _require(np.array_equal(parts, p[:14]), "a row's prediction depends on the other rows in the batch")
    if case.categorical:
        odd = holdout.head(4).with_columns(pl.Series(CATEGORICAL, ["ultraviolet", None, "ultraviolet", None]))
        _predictions(trainer, model, odd, "rows with an unseen category")


@_per_case
def check_deterministic_refit(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Two fits on the same rows, by two instances, give identical predictions."""
    features, labels = _data(case)
    first = _trainer(trainer_cls, params, case)
    second = _trainer(trainer_cls, params, case)
    p1 = _predictions(first, first.fit(features, labels), features, "first fit")
    p2 = _predictions(second, second.fit(features, labels), features, "second fit")
    differ = int(np.sum(np.any((p1 != p2).reshape(len(p1), -1), axis=1)))
    _require(differ == 0, f"refit is not deterministic: {differ} of {len(p1)} predictions differ (fix seeds)")


@_per_case
def check_save_load_round_trip(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """A saved and reloaded model, loaded by a fresh instance, predicts exactly the same (and knows its classes)."""
    features, labels = _data(case)
    trainer = _trainer(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    before = _predictions(trainer, model, features, "fitted model")
    with tempfile.TemporaryDirectory() as tmp:  # predict while the file exists: loading may be lazy
        fresh = _trainer(trainer_cls, params, case)
        loaded = fresh.load(_saved(trainer, model, Path(tmp)))
        after = _predictions(fresh, loaded, features, "loaded model")
        if case.task == "multiclass":
            same = fresh.classes(loaded) == trainer.classes(model)
            _require(same, f"classes change on save/load: {trainer.classes(model)} -> {fresh.classes(loaded)}")
    differ = int(np.sum(np.any((before != after).reshape(len(before), -1), axis=1)))
    gap = float(np.max(np.abs(before - after)))
    _require(differ == 0, f"save/load changes {differ} of {len(before)} predictions (max difference {gap:.3g})")


@_per_case
def check_save_is_repeatable(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Saving one model twice gives identical bytes (the model store names artifacts by hash)."""
    features, labels = _data(case)
    trainer = _trainer(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        first = _saved(trainer, model, Path(tmp), "first").read_bytes()
        second = _saved(trainer, model, Path(tmp), "second").read_bytes()
    _require(first == second, "saving the same model twice gives different bytes (timestamps in the file?)")


@_per_case
def check_artifact_not_pickle(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """The saved file is not a pickle and loads with every ``pickle`` loader disabled."""
    features, labels = _data(case)
    trainer = _trainer(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = _saved(trainer, model, Path(tmp))
        _require(path.read_bytes()[0] != PICKLE_PROTO, f"{path.name} starts with the pickle protocol opcode 0x80")
        with forbid_pickle() as attempts:
            try:
                loaded = _trainer(trainer_cls, params, case).load(path)
            except Exception as exc:
                _require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
                raise AssertionError(f"load failed with pickle disabled: {type(exc).__name__}: {exc}") from exc
        _require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
        _predictions(trainer, loaded, features.head(5), "model loaded with pickle disabled")


@_per_case
def check_fit_and_evaluate_metadata(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """``fit_and_evaluate`` gives JSON-ready metrics of the task describing the returned model."""
    features, labels = _data(case)
    frame = features.with_columns(pl.Series(LABEL, labels.tolist()))
    trainer = _trainer(trainer_cls, params, case)
    outcome = fit_and_evaluate(trainer, frame, features.columns, LABEL, 0.25, where="conformance")
    m = outcome.metrics
    n, n_hold = features.height, round(features.height * 0.25)
    for key in ("rows", "rows_train", "rows_holdout"):
        _require(type(m.get(key)) is int, f"metrics[{key!r}] is {m.get(key)!r}, not an int")
    _require((m["rows"], m["rows_train"], m["rows_holdout"]) == (n, n - n_hold, n_hold), f"row counts {m}")
    if case.task == "binary":
        rate = m.get("label_rate")
        _require(type(rate) is float and math.isclose(rate, labels.mean()), f"label_rate {rate!r} is not the label mean")
    metric = PRIMARY[case.task]
    _require(m.get("metric") == metric.name, f"metrics['metric'] is {m.get('metric')!r}, not {metric.name!r}")
    p = _predictions(trainer, outcome.model, features.tail(n_hold), "fit_and_evaluate model")
    expected = score(case.task, labels[-n_hold:], p, trainer.classes(outcome.model) if case.task == "multiclass" else None)
    for name in METRICS[case.task]:
        value = m.get(f"{name}_holdout")
        ok = type(value) is float and math.isfinite(value) and value >= 0
        _require(ok, f"{name}_holdout {value!r} is not a finite float >= 0")
        _require(math.isclose(value, expected[name]), f"{name}_holdout {value} does not describe the returned model")
    _require(m.get("metric_holdout") == m[f"{metric.name}_holdout"], "metric_holdout is not the primary metric's value")
    _require(isinstance(outcome.seconds, float) and outcome.seconds >= 0, f"seconds {outcome.seconds!r}")
    json.dumps(m)  # metrics go into the manifest


CHECKS: tuple[Check, ...] = (
    check_declarations,
    check_fit_predict,
    check_deterministic_refit,
    check_save_load_round_trip,
    check_save_is_repeatable,
    check_artifact_not_pickle,
    check_fit_and_evaluate_metadata,
)


def check_trainer(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """Run every conformance check on a trainer class.

    Args:
        trainer_cls: The Trainer subclass to check.
        params: Trainer params to fit with; ``None`` uses ``trainer_cls.test_params``.

    Raises:
        AssertionError: Listing every failed check and why.
    """
    failures = []
    for check in CHECKS:
        try:
            check(trainer_cls, params)
        except AssertionError as exc:
            failures.append(f"{check.__name__}: {exc}")
        except Exception as exc:  # a crash is a failed check too; report it with the rest
            failures.append(f"{check.__name__}: raised {type(exc).__name__}: {exc}")
    if failures:
        who = f"{getattr(trainer_cls, '__module__', '?')}.{getattr(trainer_cls, '__qualname__', trainer_cls)}"
        listing = "\n- ".join(failures)
        raise AssertionError(f"trainer {who} fails {len(failures)} of {len(CHECKS)} checks:\n- {listing}")


__all__ = [
    "CHECKS",
    "Case",
    "Check",
    "cases",
    "check_artifact_not_pickle",
    "check_declarations",
    "check_deterministic_refit",
    "check_fit_and_evaluate_metadata",
    "check_fit_predict",
    "check_save_is_repeatable",
    "check_save_load_round_trip",
    "check_trainer",
    "forbid_pickle",
    "make_dataset",
]
