"""Trainer plugins: every registered trainer passes the conformance kit; the kit catches bad ones.

Trainers are discovered from the entry-point group, so a newly registered plugin is covered here
without editing this file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
import subprocess
import sys
import zipfile
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

import retrain_plugins.trainers as trainers
from retrain_plugins import DataError, RetrainError, SpecError, StoreError
from retrain_plugins.testing import CHECKS, check_trainer, make_dataset
from retrain_plugins.trainers import ENTRY_POINT_GROUP, Trainer, make_trainer, trainer_class
from retrain_plugins.trainers.sklearn import HistGradientBoostingTrainer, TreeEnsemble

REGISTERED = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def test_builtin_trainers_are_registered_like_third_party_ones():
    assert {"catboost", "sklearn_hgb"} <= {ep.name for ep in REGISTERED}
    for ep in REGISTERED:
        cls = trainer_class(ep.name)
        assert cls is ep.load()
        assert cls.name == ep.name, f"{ep.value} declares name {cls.name!r} but is registered as {ep.name!r}"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("ep", REGISTERED, ids=lambda ep: ep.name)
def test_registered_trainer_conforms(ep: EntryPoint, check):
    check(ep.load(), None)


# --- a stand-in third-party trainer, and broken variants the kit must reject ---------------------


def _design(features: pl.DataFrame) -> np.ndarray:
    x = features.cast(pl.Float64, strict=False).to_numpy()
    return np.column_stack([np.ones(len(x)), np.nan_to_num(x), np.isnan(x)])


class LinearTrainer(Trainer):
    """Least squares on values and missing indicators, saved as a plain ``.npy``."""

    name = "linear"
    suffix = ".npy"

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(_design(features), 2.0 * labels - 1.0, rcond=None)[0]

    def predict_proba(self, model: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        design = _design(features)
        z = np.zeros(len(design))
        for j, w in enumerate(model):  # column by column: a row's score never depends on the batch
            z += design[:, j] * w
        return 1.0 / (1.0 + np.exp(-2.0 * z))

    def save(self, model: np.ndarray, path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, model, allow_pickle=False)

    def load(self, path: Path) -> np.ndarray:
        return np.load(path, allow_pickle=False)


class PickleInNpyTrainer(LinearTrainer):
    def save(self, model: np.ndarray, path: Path) -> None:
        box = np.empty(1, dtype=object)
        box[0] = {"weights": model}
        with open(path, "wb") as fh:
            np.save(fh, box, allow_pickle=True)

    def load(self, path: Path) -> np.ndarray:
        return np.load(path, allow_pickle=True)[0]["weights"]


class PickleTrainer(LinearTrainer):
    def save(self, model: np.ndarray, path: Path) -> None:
        path.write_bytes(pickle.dumps(model, protocol=5))

    def load(self, path: Path) -> np.ndarray:
        return pickle.loads(path.read_bytes())


class UnseededTrainer(LinearTrainer):
    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> np.ndarray:
        return super().fit(features, labels) + np.random.default_rng().normal(scale=1e-6)


class Float32Trainer(LinearTrainer):
    def save(self, model: np.ndarray, path: Path) -> None:
        super().save(model.astype(np.float32), path)

    def load(self, path: Path) -> np.ndarray:
        return super().load(path).astype(np.float64)


class LinearRegressionTrainer(LinearTrainer):
    """A third-party trainer that declares regression too (and no categoricals)."""

    tasks = frozenset({"binary", "regression"})

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> np.ndarray:
        target = labels if self.task == "regression" else 2.0 * labels - 1.0
        return np.linalg.lstsq(_design(features), target, rcond=None)[0]

    def predict(self, model: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        if self.task != "regression":
            return self.predict_proba(model, features)
        design, out = _design(features), np.zeros(features.height)
        for j, w in enumerate(model):
            out += design[:, j] * w
        return out


class RegressionKeptAsProbabilities(LinearRegressionTrainer):
    def predict(self, model: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        return self.predict_proba(model, features)  # squashes values into (0, 1)


def test_a_third_party_trainer_passes_the_kit():
    check_trainer(LinearTrainer)
    check_trainer(LinearRegressionTrainer)


def test_the_kit_runs_every_declared_task_and_names_the_case():
    from retrain_plugins.testing import Case, cases

    assert cases(LinearRegressionTrainer) == [Case("binary", False), Case("regression", False)]
    assert cases(HistGradientBoostingTrainer) == [
        Case("binary", False), Case("binary", True), Case("multiclass", True), Case("regression", True)
    ]
    with pytest.raises(AssertionError) as info:
        check_trainer(RegressionKeptAsProbabilities)
    assert re.search(r"- check_fit_predict: \[regression\] holdout RMSE is [\d.]+ x the label spread", str(info.value))


@pytest.mark.parametrize(
    ("cls", "failures"),
    [
        (PickleInNpyTrainer, {"check_artifact_not_pickle": r"load tried to unpickle"}),
        (PickleTrainer, {"check_artifact_not_pickle": r"starts with the pickle protocol opcode 0x80"}),
        (UnseededTrainer, {"check_deterministic_refit": r"refit is not deterministic: \d+ of 480 predictions differ"}),
        (Float32Trainer, {"check_save_load_round_trip": r"save/load changes \d+ of 480 predictions"}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_the_kit_names_exactly_the_broken_property(cls: type[Trainer], failures: dict[str, str]):
    with pytest.raises(AssertionError) as info:
        check_trainer(cls)
    message = str(info.value)
    assert message.startswith(f"trainer {__name__}.{cls.__qualname__} fails {len(failures)} of {len(CHECKS)} checks")
    found = dict(re.findall(r"^- (check_\w+): (.*)$", message, flags=re.MULTILINE))
    assert set(found) == set(failures)
    for check, pattern in failures.items():
        assert re.search(pattern, found[check]), found[check]


# --- choosing a trainer by name ----------------------------------------------------------------------


class Nameless(LinearTrainer):
    name = None  # type: ignore[assignment]
    suffix = None  # type: ignore[assignment]


@pytest.mark.parametrize("path", ["sklearn_hgb", "retrain_plugins.trainers.sklearn:HistGradientBoostingTrainer",
                                  "retrain_plugins.trainers.sklearn.HistGradientBoostingTrainer"])
def test_builtin_trainer_by_short_name_or_dotted_path(path: str):
    assert trainer_class(path) is HistGradientBoostingTrainer


@pytest.mark.parametrize("path", [f"{__name__}:LinearTrainer", f"{__name__}.LinearTrainer"])
def test_unregistered_trainer_by_dotted_path(path: str):
    assert trainer_class(path) is LinearTrainer
    assert make_trainer(path, {"alpha": 1}).params == {"alpha": 1}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("xgboost", r"unknown trainer 'xgboost'; registered trainers: \[.*'catboost'.*'sklearn_hgb'.*\]"),
        ("no_such_package.trainers:Fast", r"trainer 'no_such_package.trainers:Fast' cannot be imported: No module"),
        ("retrain_plugins.trainers.sklearn:Missing", r"cannot be imported: .*has no attribute 'Missing'"),
        ("sklearn.ensemble.HistGradientBoostingClassifier", r"Classifier'>, which is not a retrain_plugins"),
        ("os.path:join", r"resolves to <function join.*not a retrain_plugins Trainer"),
        ("retrain_plugins.trainers.base:Trainer", r"leaves abstract methods unimplemented"),
        (f"{__name__}:Nameless", r"does not declare \['name', 'suffix'\]"),
    ],
)
def test_bad_trainer_names_fail_clearly(name: str, message: str):
    with pytest.raises(SpecError, match=message):
        trainer_class(name)


def test_registered_trainer_that_cannot_be_imported(monkeypatch):
    broken = EntryPoint(name="broken", value="no_such_package:Trainer", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(trainers, "_registered", lambda: {"broken": broken})
    with pytest.raises(SpecError, match=r"trainer 'broken' \(no_such_package:Trainer\) cannot be imported"):
        trainer_class("broken")


# --- the scikit-learn trainer's array format -------------------------------------------------------


def _probe_rows(model: TreeEnsemble, n_random: int, seed: int) -> np.ndarray:
    """Random rows with NaN and +-inf in every column, plus rows exactly at and just above each threshold."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_random, len(model.feature_names))) * 2
    z[rng.random(z.shape) < 0.15] = np.nan
    z[rng.random(z.shape) < 0.02] = np.inf
    z[rng.random(z.shape) < 0.02] = -np.inf
    inner = model.arrays["is_leaf"] == 0
    feature, threshold = model.arrays["feature"][inner], model.arrays["threshold"][inner]
    at = np.repeat(z[:1], 2 * len(feature), axis=0)
    at[np.arange(len(feature)), feature] = threshold
    at[len(feature) + np.arange(len(feature)), feature] = np.nextafter(threshold, np.inf)
    return np.vstack([z, at])


@pytest.mark.parametrize(
    "params",
    [{}, {"max_depth": None, "max_leaf_nodes": 63, "max_iter": 60}, {"l2_regularization": 1.0, "max_bins": 16}],
    ids=["defaults", "deep", "coarse"],
)
def test_exported_trees_predict_bit_identically_to_scikit_learn(tmp_path, params: dict[str, Any]):
    features, labels = make_dataset(n_rows=1200, seed=7)  # column 'signal' has no NaN in training
    trainer = HistGradientBoostingTrainer(params)
    estimator_params = {k: v for k, v in trainer.params.items() if k != "n_threads"}
    with threadpool_limits(limits=1, user_api="openmp"):  # OpenMP spin-waits crawl on a busy machine
        estimator = HistGradientBoostingClassifier(**estimator_params).fit(features.to_numpy(), labels)
        model = TreeEnsemble.from_estimator(estimator, features.columns)
        z = _probe_rows(model, n_random=6_000, seed=1)  # with 200 trees, more rows than one chunk
        expected = estimator.predict_proba(z)[:, 1]
        refit_expected = estimator.predict_proba(features.to_numpy())[:, 1]
    assert np.array_equal(model.predict_proba(z), expected)
    trainer.save(model, tmp_path / "model.npz")
    loaded = trainer.load(tmp_path / "model.npz")
    assert np.array_equal(trainer.predict_proba(loaded, pl.DataFrame(z, schema=features.columns)), expected)
    assert np.array_equal(trainer.predict_proba(trainer.fit(features, labels), features), refit_expected)


def test_artifact_is_a_plain_npz_with_fixed_timestamps(tmp_path):
    features, labels = make_dataset()
    trainer = HistGradientBoostingTrainer({"max_iter": 10})
    trainer.save(trainer.fit(features, labels), tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "meta.json"}
    assert sorted(arrays) == sorted(
        ["baseline", "roots", "value", "feature", "threshold", "missing_left", "left", "right", "is_leaf",
         "is_categorical", "bitset", "left_bitsets", "known_bitsets", "f_idx_map"]
    )
    assert all(a.dtype.kind in "fiu" for a in arrays.values())
    assert len(arrays["roots"]) == 10
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        meta = json.loads(zf.read("meta.json"))
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert meta == {"format": "retrain_plugins.hist_gradient_boosting", "version": 2, "task": "binary",
                    "classes": [0, 1], "features": ["signal", "inverse", "noise", "sparse"], "categories": {}}


def _rewrite(src: Path, dst: Path, **replace: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, replace.get(name.replace(".", "_"), zin.read(name)))
    return dst


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    features, labels = make_dataset()
    trainer = HistGradientBoostingTrainer({"max_iter": 5})
    good = tmp_path / "good.npz"
    model = trainer.fit(features, labels)
    trainer.save(model, good)
    catboost = make_trainer("catboost", {"iterations": 5})
    catboost.save(catboost.fit(features, labels), tmp_path / "other.cbm")
    looping = model.arrays["left"].copy()
    looping[model.arrays["is_leaf"] == 0] = 0  # every split points back at the first root
    cases = {
        tmp_path / "other.cbm": r"is not a sklearn_hgb model file: File is not a zip file",
        _rewrite(good, tmp_path / "v2.npz", meta_json=b'{"format": "retrain_plugins.hist_gradient_boosting", '
                 b'"version": 99}'): r"format .* v99",
        _rewrite(good, tmp_path / "loop.npz", left_npy=_npy(looping)): r"a split node points outside its tree",
        _rewrite(good, tmp_path / "f32.npz", value_npy=_npy(model.arrays["value"].astype(np.float32))):
            r"array 'value' is float32",
    }
    for path, message in cases.items():
        with pytest.raises(StoreError, match=message):
            trainer.load(path)


def test_predict_matches_columns_by_name():
    features, labels = make_dataset()
    trainer = HistGradientBoostingTrainer({"max_iter": 10})
    model = trainer.fit(features, labels)
    shuffled = features.select(reversed(features.columns)).with_columns(extra=pl.lit(1.0))
    assert np.array_equal(trainer.predict_proba(model, shuffled), trainer.predict_proba(model, features))
    with pytest.raises(DataError, match=r"features lack columns \['noise'\]"):
        trainer.predict_proba(model, features.drop("noise"))


@pytest.mark.parametrize("params", [{"categorical_features": [0]}, {"loss": "exponential"}])
def test_unsupported_estimator_params_fail_at_construction(params: dict[str, Any]):
    with pytest.raises(SpecError, match="trainer sklearn_hgb"):
        make_trainer("sklearn_hgb", params)


def test_fit_refuses_an_export_that_predicts_differently(monkeypatch):
    export = TreeEnsemble.from_estimator.__func__

    def shifted(cls, estimator, names, categories=None):
        model = export(cls, estimator, names, categories)
        return dataclasses.replace(model, arrays={**model.arrays, "baseline": model.arrays["baseline"] + 1e-9})

    monkeypatch.setattr(TreeEnsemble, "from_estimator", classmethod(shifted))
    features, labels = make_dataset()
    with pytest.raises(RetrainError, match="exported trees predict differently from scikit-learn"):
        HistGradientBoostingTrainer({"max_iter": 5}).fit(features, labels)


def test_holdout_metrics_never_import_sklearn_metrics():
    """``sklearn.metrics`` takes seconds to import: no run process pays it for one AUC (numpy computes it)."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import retrain_plugins\n"
        "from retrain_plugins.tasks import score\n"
        "from retrain_plugins.trainers.base import auc_or_none\n"
        "assert auc_or_none(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.7])) == 1.0\n"
        "assert score('binary', np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.7, 0.7]))['auc'] == 0.875\n"
        "assert 'sklearn' not in sys.modules, 'scikit-learn imported to score a holdout'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- tasks and categorical features -------------------------------------------------------------


def _encoded(features: pl.DataFrame) -> tuple[np.ndarray, list[str], dict[str, tuple[str, ...]]]:
    """What the sklearn trainer feeds scikit-learn: category codes first, then the numbers."""
    from retrain_plugins.trainers.sklearn import encode

    categories = {"color": tuple(sorted(features["color"].drop_nulls().unique().to_list()))}
    names = ["color", *(c for c in features.columns if c != "color")]
    return encode(features, names, categories), names, categories


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_categorical_splits_and_every_task_export_bit_identically(tmp_path, task: str):
    from sklearn.ensemble import HistGradientBoostingRegressor

    features, labels = make_dataset(n_rows=1200, seed=5, task=task, categorical=True)
    x, names, categories = _encoded(features)
    params = {"max_iter": 40, "max_depth": 5, "early_stopping": False, "random_state": 0,
              "categorical_features": np.arange(len(names)) < 1}
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    with threadpool_limits(limits=1, user_api="openmp"):
        estimator = cls(**params).fit(x, labels)
        model = TreeEnsemble.from_estimator(estimator, names, categories)
        rng = np.random.default_rng(2)
        z = np.column_stack([rng.normal(size=(3000, len(names)))])
        # category codes: known ones, NaN, negative, and codes scikit-learn never saw (treated as missing)
        z[:, 0] = rng.choice([0.0, 1.0, 2.0, 3.0, np.nan, -1.0, 4.0, 9.0, 200.0], size=3000)
        z[:, 1:][rng.random((3000, len(names) - 1)) < 0.15] = np.nan
        expected = estimator.predict(z) if task == "regression" else estimator.predict_proba(z)
    assert model.arrays["is_categorical"].any(), "the fit made no categorical split: the test tests nothing"
    got = model.predict(z)
    assert np.array_equal(got, expected[:, 1] if task == "binary" else expected)
    trainer = HistGradientBoostingTrainer({"max_iter": 40, "max_depth": 5}, task=task, categorical=["color"])
    trainer.save(model, tmp_path / "m.npz")
    loaded = trainer.load(tmp_path / "m.npz")
    assert np.array_equal(loaded.predict(z), got) and loaded.categories == categories and loaded.task == task
    assert trainer.classes(loaded) == ([0, 1] if task == "binary" else ["a", "b", "c"] if task == "multiclass" else [])


def test_sklearn_unseen_and_null_categories_predict_as_missing():
    features, labels = make_dataset(task="regression", categorical=True)
    trainer = HistGradientBoostingTrainer({"max_iter": 20}, task="regression", categorical=["color"])
    model = trainer.fit(features, labels)
    head = features.head(20)
    unseen = trainer.predict(model, head.with_columns(pl.lit("ultraviolet").alias("color")))
    null = trainer.predict(model, head.with_columns(pl.lit(None, dtype=pl.String).alias("color")))
    assert np.array_equal(unseen, null)
    assert not np.array_equal(null, trainer.predict(model, head.with_columns(pl.lit("red").alias("color"))))


def test_sklearn_refuses_more_categories_than_bins():
    features = pl.DataFrame({"c": [f"v{i % 40}" for i in range(400)], "x": np.arange(400.0)})
    trainer = HistGradientBoostingTrainer({"max_iter": 5, "max_bins": 32}, task="regression", categorical=["c"])
    with pytest.raises(DataError, match=r"more than max_bins=32 categories: \{'c': 40\}"):
        trainer.fit(features, np.arange(400.0))


def test_sklearn_format_1_files_still_load(tmp_path):
    features, labels = make_dataset()
    trainer = HistGradientBoostingTrainer({"max_iter": 5})
    model = trainer.fit(features, labels)
    trainer.save(model, tmp_path / "v2.npz")
    v1 = tmp_path / "v1.npz"
    with zipfile.ZipFile(tmp_path / "v2.npz") as zin, zipfile.ZipFile(v1, "w") as zout:
        meta = {"format": "retrain_plugins.hist_gradient_boosting", "version": 1, "classes": [0, 1],
                "features": list(model.feature_names)}
        zout.writestr("meta.json", json.dumps(meta))
        for name in zin.namelist():
            if name.removesuffix(".npy") in ("baseline", "roots", "value", "feature", "threshold", "missing_left",
                                             "left", "right", "is_leaf"):
                zout.writestr(name, zin.read(name))
    assert np.array_equal(trainer.predict_proba(trainer.load(v1), features), trainer.predict_proba(model, features))


def test_catboost_null_categories_are_a_fixed_token_at_fit_and_predict():
    features, labels = make_dataset(task="binary", categorical=True)
    assert features["color"].null_count() > 0
    trainer = make_trainer("catboost", {"iterations": 30}, task="binary", categorical=["color"])
    with_nulls = trainer.predict(trainer.fit(features, labels), features)
    token = features.with_columns(pl.col("color").fill_null("__missing__"))
    assert np.array_equal(trainer.predict(trainer.fit(token, labels), token), with_nulls)
    model = trainer.fit(features, labels)
    assert np.array_equal(trainer.predict(model, token), with_nulls)
    assert np.array_equal(trainer.predict_proba(model, features), with_nulls)  # binary: P(1) both ways


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_catboost_warm_start_continues_every_task_deterministically(tmp_path, task: str):
    features, labels = make_dataset(task=task, categorical=True)
    trainer = make_trainer("catboost", {"iterations": 20}, task=task, categorical=["color"])
    base = trainer.fit(features.head(300), labels[:300])
    trainer.save(base, tmp_path / "base.cbm")
    runs = [trainer.continue_fit(trainer.load(tmp_path / "base.cbm"), features.tail(180), labels[300:]) for _ in range(2)]
    assert [trainer.size(m) for m in runs] == [40, 40]
    first, second = (trainer.predict(m, features) for m in runs)
    assert np.array_equal(first, second) and not np.array_equal(first, trainer.predict(base, features))
    if task == "multiclass":
        assert trainer.classes(runs[0]) == ["a", "b", "c"]
        with pytest.raises(DataError, match=r"new rows hold classes \['z'\] the current model does not know"):
            trainer.continue_fit(base, features.tail(3), np.array(["a", "z", "b"], dtype=object))
