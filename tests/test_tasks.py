"""Tasks: inferring the task, validating labels, scoring, the metric check, and label drift."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey

from retrain_plugins import DataError, SpecError
from retrain_plugins.changes.drift import category_psi, detect_drift
from retrain_plugins.dagster.run_checks import run_checks
from retrain_plugins.spec import DriftSpec, GateSpec
from retrain_plugins.tasks import PRIMARY, resolve_task, score, validate_labels
from retrain_plugins.testing import make_dataset
from retrain_plugins.trainers import Trainer, fit_and_evaluate, make_trainer

from .test_trainers import LinearTrainer


@pytest.mark.parametrize(
    ("dtype", "task"),
    [
        (pl.Boolean, "binary"),
        (pl.Int8, "binary"),
        (pl.UInt32, "binary"),
        (pl.Int64, "binary"),
        (pl.String, "multiclass"),
        (pl.Categorical, "multiclass"),
        (pl.Enum(["a", "b"]), "multiclass"),
        (pl.Float32, "regression"),
        (pl.Float64, "regression"),
    ],
)
def test_auto_infers_the_task_from_the_label_type(dtype, task):
    assert resolve_task("auto", dtype) == task


def test_an_explicit_task_wins_and_an_unknown_type_is_refused():
    assert resolve_task("multiclass", pl.Int64) == "multiclass"
    assert resolve_task("regression", pl.Int64) == "regression"
    with pytest.raises(DataError, match=r"cannot infer the task from a label column of type Date: set `task:`"):
        resolve_task("auto", pl.Date)


def test_label_validation_names_the_partition_the_column_and_the_fix():
    with pytest.raises(DataError, match=(
        r"^partition 2025-01-01/east: label column 'y' has 2 values outside \{0, 1\}; for classes or amounts "
        r"set `task: multiclass` or `task: regression`"
    )):
        validate_labels("binary", pl.Series("y", [0, 1, 2, 3, 1]), "partition 2025-01-01/east")
    with pytest.raises(DataError, match=r"^p: label column 'y' has 1 null class labels$"):
        validate_labels("multiclass", pl.Series("y", ["a", None, "b"]), "p")
    with pytest.raises(DataError, match=r"^p: label column 'y' has 2 null or non-finite values$"):
        validate_labels("regression", pl.Series("y", [1.0, None, math.inf, 2.5]), "p")
    with pytest.raises(DataError, match=r"has type String, not numbers"):
        validate_labels("regression", pl.Series("y", ["1.0"]), "p")
    validate_labels("binary", pl.Series("y", [True, False]), "p")
    validate_labels("multiclass", pl.Series("y", [3, 7, 3]), "p")
    validate_labels("regression", pl.Series("y", [-1, 2, 3]), "p")


def test_scores_match_scikit_learn():
    from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(rng.random(200) * 0.6 + 0.4 * y, 0.01, 0.99)
    got = score("binary", y, p)
    assert got["auc"] == roc_auc_score(y, p) and math.isclose(got["logloss"], log_loss(y, p))
    for ties in (np.round(p, 1), (p > 0.5).astype(float), np.full(200, 0.5), p.astype(np.float32)):
        assert score("binary", y, ties)["auc"] == roc_auc_score(y, ties)  # the same float, ties included
    assert score("binary", np.ones(5, dtype=int), np.linspace(0, 1, 5))["auc"] is None
    values, predicted = rng.normal(size=200), rng.normal(size=200)
    got = score("regression", values, predicted)
    assert math.isclose(got["rmse"], math.sqrt(mean_squared_error(values, predicted)))
    assert math.isclose(got["mae"], mean_absolute_error(values, predicted))
    classes = ["a", "b", "c"]
    labels = np.array(classes, dtype=object)[rng.integers(0, 3, 200)]
    proba = rng.dirichlet(np.ones(3), size=200)
    got = score("multiclass", labels, proba, classes)
    assert math.isclose(got["logloss"], log_loss(labels, proba, labels=classes))
    assert got["accuracy"] == accuracy_score(labels, np.array(classes, dtype=object)[proba.argmax(axis=1)])
    # a class the model does not know costs as much as probability 1e-15, not an exception
    unseen = score("multiclass", np.array(["d"], dtype=object), np.array([[0.2, 0.3, 0.5]]), classes)
    assert math.isclose(unseen["logloss"], -math.log(1e-15)) and unseen["accuracy"] == 0.0


def test_metric_directions_and_gate_bounds():
    assert PRIMARY["binary"].better(0.80, 0.81, tolerance=0.02) and not PRIMARY["binary"].better(0.78, 0.81, 0.02)
    assert PRIMARY["regression"].better(1.01, 1.0, tolerance=0.02) and not PRIMARY["regression"].better(1.05, 1.0, 0.02)
    assert not PRIMARY["multiclass"].better(0.9, 0.8)
    assert GateSpec().bound("binary") == 0.5 and GateSpec().bound("regression") is None
    assert GateSpec(metric_bound=2.5).bound("regression") == 2.5 and GateSpec(metric_bound=0.7).bound("binary") == 0.7


class _Spec:
    """The two spec fields ``run_checks`` reads."""

    def __init__(self, task: str, gate: GateSpec):
        self.task, self.gate = task, gate


def _check(results: list[dict], task: str, gate: GateSpec):
    (metric_check, _) = run_checks(_Spec(task, gate), results, AssetKey(["churn", "sub_model"]))  # type: ignore[arg-type]
    return metric_check


def test_the_metric_check_is_a_floor_for_auc_and_a_ceiling_for_rmse():
    reg = [
        {"partition": "w/a", "status": "trained", "task": "regression", "metric": "rmse", "metric_holdout": 1.5},
        {"partition": "w/b", "status": "rejected", "task": "regression", "metric": "rmse", "metric_holdout": 3.0},
    ]
    check = _check(reg, "auto", GateSpec(metric_bound=2.0))
    assert check.check_name == "holdout_metric_floor" and not check.passed
    assert check.metadata["outside"].value == ["w/b: 3.0"] and check.metadata["higher_is_better"].value is False
    assert check.description == "1 of 2 sub-models in this run: RMSE at most 2.0"
    assert _check(reg, "regression", GateSpec()).passed  # no bound set for regression: nothing to check
    binary = [
        {"partition": "w/a", "status": "trained", "task": "binary", "metric_holdout": 0.45, "auc_holdout": 0.45},
        {"partition": "w/b", "status": "trained", "metric_holdout": 0.9, "auc_holdout": 0.9},
    ]
    check = _check(binary, "auto", GateSpec())
    assert not check.passed and check.metadata["outside"].value == ["w/a: 0.45"] and check.metadata["floor"].value == 0.5


def test_fit_and_evaluate_refuses_single_class_training_rows_and_undeclared_categoricals():
    features, labels = make_dataset(60, task="multiclass", categorical=True)
    frame = features.with_columns(pl.Series("y", ["a"] * 50 + labels[50:].tolist()))
    trainer = make_trainer("catboost", {"iterations": 5}, task="multiclass", categorical=["color"])
    with pytest.raises(DataError, match=r"^p: needs at least two label classes in its 45 training rows$"):
        fit_and_evaluate(trainer, frame, features.columns, "y", 0.25, where="p")
    plain = make_trainer("catboost", {"iterations": 5}, task="multiclass")
    with pytest.raises(DataError, match=r"feature columns \['color'\] are categorical \(strings\) but trainer 'catboost'"):
        fit_and_evaluate(plain, features.with_columns(pl.Series("y", labels)), features.columns, "y", 0.25, where="p")


def test_make_trainer_refuses_what_a_trainer_does_not_declare():
    path = "tests.test_trainers:LinearTrainer"
    assert LinearTrainer.tasks == frozenset({"binary"}) and not LinearTrainer.supports_categorical
    assert make_trainer(path).task == "binary"  # a trainer written before tasks still works
    with pytest.raises(SpecError, match=r"does not support task 'regression' \(it supports \['binary'\]\)"):
        make_trainer(path, task="regression")
    with pytest.raises(SpecError, match=r"does not support categorical features, and the data has categorical \(string\) columns \['plan'\]"):
        make_trainer(path, categorical=["plan"])
    trainer = make_trainer("sklearn_hgb", task="regression", categorical=["plan"])
    assert isinstance(trainer, Trainer) and (trainer.task, trainer.categorical) == ("regression", ("plan",))
    with pytest.raises(SpecError, match=r"supports only loss='squared_error' for task 'regression'"):
        make_trainer("sklearn_hgb", {"loss": "log_loss"}, task="regression")


def _drift(reference: pl.DataFrame, current: pl.DataFrame, features: list[str], task=None):
    return detect_drift(reference, current, features, "y", DriftSpec(min_rows=50), task=task)


def test_label_drift_by_task():
    rng = np.random.default_rng(0)
    base = pl.DataFrame({"x": rng.normal(size=400)})
    shifted = {
        "regression": (rng.normal(size=400), rng.normal(loc=2.0, size=400), "label_values"),
        "multiclass": (rng.choice(["a", "b", "c"], 400), rng.choice(["a", "b", "c"], 400, p=[0.8, 0.1, 0.1]), "label_classes"),
        # as before tasks: 2 quantile bins of the reference labels (a reference whose median is 1)
        "binary": ((rng.random(400) < 0.7).astype(np.int64), (rng.random(400) < 0.1).astype(np.int64), "label_rate"),
    }
    for task, (before, after, name) in shifted.items():
        result = _drift(base.with_columns(y=pl.Series(before)), base.with_columns(y=pl.Series(after)), ["x"])
        assert result.top[0] == name and result.scores[name] > 0.5 and result.drifted, (task, result)
        same = _drift(base.with_columns(y=pl.Series(before)), base.with_columns(y=pl.Series(before)), ["x"])
        assert same.scores[name] == 0.0 and not same.drifted


def test_categorical_features_drift_over_category_shares_with_unseen_categories_in_one_bin():
    ref = pl.Series(["red", "blue", None, "red"] * 50)
    assert category_psi(ref, ref) == 0.0
    unseen = category_psi(ref, pl.Series(["teal", "plum", "teal", "red"] * 50))
    one_unseen = category_psi(ref, pl.Series(["teal", "teal", "teal", "red"] * 50))
    assert unseen == one_unseen > 1.0  # every unseen category shares one bin
    frame = pl.DataFrame({"color": ref, "y": [0, 1] * 100})
    result = _drift(frame, frame.with_columns(color=pl.Series(["teal", "plum", "teal", "red"] * 50)), ["color"])
    assert result.top[0] == "color" and result.drifted
