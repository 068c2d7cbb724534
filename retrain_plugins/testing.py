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
fits at most twice per case on a few hundred rows. What the checks are built from (an instance
per case, predictions checked for the task, :func:`per_case`) is in
:mod:`retrain_plugins.testing_support`, for a plugin's own extra checks.
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
from collections.abc import Mapping
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
    Check,
    case_data,
    cases,
    checked_predictions,
    forbid_pickle,
    make_dataset,
    per_case,
    require,
    saved_file,
    trainer_for,
)
from retrain_plugins.trainers.base import Trainer, fit_and_evaluate


def check_declarations(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """The class is a concrete Trainer declaring ``name``, ``suffix``, ``defaults``, ``test_params`` and ``tasks``."""
    is_trainer = isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)
    require(is_trainer, f"{trainer_cls!r} is not a Trainer subclass")
    require(not inspect.isabstract(trainer_cls), f"{trainer_cls.__qualname__} leaves abstract methods unimplemented")
    name, suffix = getattr(trainer_cls, "name", None), getattr(trainer_cls, "suffix", None)
    require(isinstance(name, str) and name and name == "".join(name.split()), f"name must be a word, got {name!r}")
    ok_suffix = isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1
    require(ok_suffix, f"suffix must look like '.ext', got {suffix!r}")
    require(isinstance(trainer_cls.defaults, Mapping), "defaults must be a mapping")
    require(isinstance(trainer_cls.test_params, Mapping), "test_params must be a mapping")
    tasks = getattr(trainer_cls, "tasks", None)
    require(isinstance(tasks, frozenset) and tasks, f"tasks must be a non-empty frozenset, got {tasks!r}")
    unknown = sorted(set(tasks) - set(TASKS))
    require(not unknown, f"tasks names unknown tasks {unknown}; known: {list(TASKS)}")
    for case in cases(trainer_cls):
        try:
            trainer = trainer_for(trainer_cls, params, case)
        except TypeError as exc:
            raise AssertionError(f"{case} __init__ must accept task= and categorical= keywords: {exc}") from exc
        missing = [k for k in trainer_cls.defaults if k not in trainer.params]
        require(not missing, f"instance params lack defaults {missing}; call Trainer.__init__")
        wanted = (case.task, (CATEGORICAL,) if case.categorical else ())
        require((trainer.task, trainer.categorical) == wanted, f"{case} the instance has task/categorical "
                 f"{(trainer.task, trainer.categorical)}, not {wanted}; pass them to Trainer.__init__")


def _quality(case: Case, trainer: Trainer, model: Any, labels: np.ndarray, p: np.ndarray) -> None:
    classes = trainer.classes(model) if case.task == "multiclass" else None
    got = score(case.task, labels, p, classes)
    if case.task == "binary":
        require(got["auc"] >= MIN_AUC, f"holdout AUC {got['auc']:.3f} < {MIN_AUC} on a learnable signal: not learning")
    elif case.task == "multiclass":
        require(sorted(classes) == ["a", "b", "c"], f"classes(model) is {classes!r}, not the classes ['a', 'b', 'c']")
        ok = got["accuracy"] >= MIN_ACCURACY
        require(ok, f"holdout accuracy {got['accuracy']:.3f} < {MIN_ACCURACY} on a learnable signal: not learning")
    else:
        ratio = got["rmse"] / float(np.std(labels))
        require(ratio <= MAX_RMSE_RATIO, f"holdout RMSE is {ratio:.2f} x the label spread (> {MAX_RMSE_RATIO}): not learning")


@per_case
def check_fit_predict(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Fits on rows with NaNs (and null categories); predictions are valid for the task, learn the
    signal, ignore batch composition, and survive unseen categories."""
    features, labels = case_data(case)
    n_train = features.height * 3 // 4
    trainer = trainer_for(trainer_cls, params, case)
    model = trainer.fit(features.head(n_train), labels[:n_train])
    holdout = features.tail(features.height - n_train)
    p = checked_predictions(trainer, model, holdout, "holdout")
    _quality(case, trainer, model, labels[n_train:], p)
    parts = np.concatenate([checked_predictions(trainer, model, holdout.slice(s, 7), "subset") for s in (0, 7)])
    require(np.array_equal(parts, p[:14]), "a row's prediction depends on the other rows in the batch")
    if case.categorical:
        odd = holdout.head(4).with_columns(pl.Series(CATEGORICAL, ["ultraviolet", None, "ultraviolet", None]))
        checked_predictions(trainer, model, odd, "rows with an unseen category")


@per_case
def check_deterministic_refit(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Two fits on the same rows, by two instances, give identical predictions."""
    features, labels = case_data(case)
    first = trainer_for(trainer_cls, params, case)
    second = trainer_for(trainer_cls, params, case)
    p1 = checked_predictions(first, first.fit(features, labels), features, "first fit")
    p2 = checked_predictions(second, second.fit(features, labels), features, "second fit")
    differ = int(np.sum(np.any((p1 != p2).reshape(len(p1), -1), axis=1)))
    require(differ == 0, f"refit is not deterministic: {differ} of {len(p1)} predictions differ (fix seeds)")


@per_case
def check_save_load_round_trip(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """A saved and reloaded model, loaded by a fresh instance, predicts exactly the same (and knows its classes)."""
    features, labels = case_data(case)
    trainer = trainer_for(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    before = checked_predictions(trainer, model, features, "fitted model")
    with tempfile.TemporaryDirectory() as tmp:  # predict while the file exists: loading may be lazy
        fresh = trainer_for(trainer_cls, params, case)
        loaded = fresh.load(saved_file(trainer, model, Path(tmp)))
        after = checked_predictions(fresh, loaded, features, "loaded model")
        if case.task == "multiclass":
            same = fresh.classes(loaded) == trainer.classes(model)
            require(same, f"classes change on save/load: {trainer.classes(model)} -> {fresh.classes(loaded)}")
    differ = int(np.sum(np.any((before != after).reshape(len(before), -1), axis=1)))
    gap = float(np.max(np.abs(before - after)))
    require(differ == 0, f"save/load changes {differ} of {len(before)} predictions (max difference {gap:.3g})")


@per_case
def check_save_is_repeatable(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """Saving one model twice gives identical bytes (the model store names artifacts by hash)."""
    features, labels = case_data(case)
    trainer = trainer_for(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        first = saved_file(trainer, model, Path(tmp), "first").read_bytes()
        second = saved_file(trainer, model, Path(tmp), "second").read_bytes()
    require(first == second, "saving the same model twice gives different bytes (timestamps in the file?)")


@per_case
def check_artifact_not_pickle(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """The saved file is not a pickle and loads with every ``pickle`` loader disabled."""
    features, labels = case_data(case)
    trainer = trainer_for(trainer_cls, params, case)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = saved_file(trainer, model, Path(tmp))
        require(path.read_bytes()[0] != PICKLE_PROTO, f"{path.name} starts with the pickle protocol opcode 0x80")
        with forbid_pickle() as attempts:
            try:
                loaded = trainer_for(trainer_cls, params, case).load(path)
            except Exception as exc:
                require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
                raise AssertionError(f"load failed with pickle disabled: {type(exc).__name__}: {exc}") from exc
        require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
        checked_predictions(trainer, loaded, features.head(5), "model loaded with pickle disabled")


@per_case
def check_fit_and_evaluate_metadata(trainer_cls: type[Trainer], params: Mapping[str, Any] | None, case: Case) -> None:
    """``fit_and_evaluate`` gives JSON-ready metrics of the task describing the returned model."""
    features, labels = case_data(case)
    frame = features.with_columns(pl.Series(LABEL, labels.tolist()))
    trainer = trainer_for(trainer_cls, params, case)
    outcome = fit_and_evaluate(trainer, frame, features.columns, LABEL, 0.25, where="conformance")
    m = outcome.metrics
    n, n_hold = features.height, round(features.height * 0.25)
    for key in ("rows", "rows_train", "rows_holdout"):
        require(type(m.get(key)) is int, f"metrics[{key!r}] is {m.get(key)!r}, not an int")
    require((m["rows"], m["rows_train"], m["rows_holdout"]) == (n, n - n_hold, n_hold), f"row counts {m}")
    if case.task == "binary":
        rate = m.get("label_rate")
        require(type(rate) is float and math.isclose(rate, labels.mean()), f"label_rate {rate!r} is not the label mean")
    metric = PRIMARY[case.task]
    require(m.get("metric") == metric.name, f"metrics['metric'] is {m.get('metric')!r}, not {metric.name!r}")
    p = checked_predictions(trainer, outcome.model, features.tail(n_hold), "fit_and_evaluate model")
    expected = score(case.task, labels[-n_hold:], p, trainer.classes(outcome.model) if case.task == "multiclass" else None)
    for name in METRICS[case.task]:
        value = m.get(f"{name}_holdout")
        ok = type(value) is float and math.isfinite(value) and value >= 0
        require(ok, f"{name}_holdout {value!r} is not a finite float >= 0")
        require(math.isclose(value, expected[name]), f"{name}_holdout {value} does not describe the returned model")
    require(m.get("metric_holdout") == m[f"{metric.name}_holdout"], "metric_holdout is not the primary metric's value")
    require(isinstance(outcome.seconds, float) and outcome.seconds >= 0, f"seconds {outcome.seconds!r}")
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
