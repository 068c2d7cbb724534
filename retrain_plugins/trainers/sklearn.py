"""scikit-learn ``HistGradientBoosting*`` trainer, saved as plain arrays, never pickled.

binary and multiclass fit a ``HistGradientBoostingClassifier`` (log loss), regression a
``HistGradientBoostingRegressor`` (squared error). Categorical (string) features use
scikit-learn's native categorical splits: each is encoded as the index of its value among the
sorted categories of the training rows (nulls and categories unseen in training: NaN, i.e.
missing), placed first in the matrix, and its categories are stored with the model.

A fitted estimator is reduced to a :class:`~retrain_plugins.trainers.sklearn_trees.TreeEnsemble`
that predicts bit-identically to scikit-learn (see that module); :meth:`fit` verifies that on
the training rows and refuses to return a model that disagrees.

The artifact is a zip of ``.npy`` arrays plus ``meta.json`` (task, classes, features,
categories; ``numpy.load(path, allow_pickle=False)`` opens it), written with fixed timestamps so
one model always gives the same bytes: the model store names artifacts by their hash. Files of
format version 1 (binary, numeric only) still load.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from retrain_plugins.errors import DataError, RetrainError, SpecError, StoreError
from retrain_plugins.tasks import Task
from retrain_plugins.trainers.base import Trainer
from retrain_plugins.trainers.sklearn_trees import ARRAYS, TreeEnsemble

FORMAT = "retrain_plugins.hist_gradient_boosting"
FORMAT_VERSION = 2
_V1_ABSENT = ("is_categorical", "bitset", "left_bitsets", "known_bitsets", "f_idx_map")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_LOSSES = {"binary": "log_loss", "multiclass": "log_loss", "regression": "squared_error"}


def encode(features: pl.DataFrame, names: Sequence[str], categories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The float64 matrix a :class:`TreeEnsemble` reads: category codes (NaN missing/unseen), then numbers."""
    columns = []
    for name in names:
        if name in categories:
            known = list(categories[name])
            codes = features[name].cast(pl.String).replace_strict(
                known, np.arange(len(known), dtype=np.float64).tolist(), default=None, return_dtype=pl.Float64
            )
            columns.append(codes.fill_null(np.nan).to_numpy())
        else:
            columns.append(features[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy())
    return np.column_stack(columns) if columns else np.zeros((features.height, 0))


class HistGradientBoostingTrainer(Trainer):
    """Gradient-boosted trees with scikit-learn's ``HistGradientBoostingClassifier``/``Regressor``.

    ``params`` go to the estimator, except ``n_threads``: the OpenMP threads it fits with, set
    through threadpoolctl (``None``: no limit; the trees do not depend on it). One thread is
    several times faster than two for the small per-partition fits here on a busy machine, where
    OpenMP spin-waits cost more than they save. Defaults are close to the CatBoost trainer's (200
    rounds, depth 6, learning rate 0.08); ``early_stopping=False`` and a fixed ``random_state``
    make refits identical. ``categorical_features`` is set by the trainer from the column types
    (at most ``max_bins`` categories per column in a training set).
    """

    name: ClassVar[str] = "sklearn_hgb"
    suffix: ClassVar[str] = ".npz"
    tasks: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass", "regression"})
    supports_categorical: ClassVar[bool] = True
    library: ClassVar[str] = "scikit-learn"
    defaults: ClassVar[dict[str, Any]] = {
        "max_iter": 200,
        "max_depth": 6,
        "learning_rate": 0.08,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "early_stopping": False,
        "random_state": 0,
        "n_threads": 1,
    }
    test_params: ClassVar[dict[str, Any]] = {"max_iter": 50}

    def __init__(
        self, params: Mapping[str, Any] | None = None, *, task: Task = "binary", categorical: Sequence[str] = ()
    ):
        super().__init__(params, task=task, categorical=categorical)
        if self.params.get("categorical_features", None) not in (None, "from_dtype"):
            raise SpecError("trainer sklearn_hgb sets categorical_features itself, from the column types")
        loss = _LOSSES[self.task]
        if self.params.get("loss", loss) != loss:
            raise SpecError(f"trainer sklearn_hgb supports only loss={loss!r} for task {self.task!r}")

    def check_params(self) -> None:
        """scikit-learn's own parameter validation of the estimator these parameters build."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        params = {k: v for k, v in self.params.items() if k not in ("n_threads", "categorical_features")}
        estimator_cls = HistGradientBoostingRegressor if self.task == "regression" else HistGradientBoostingClassifier
        estimator_cls(**params)._validate_params()

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> TreeEnsemble:
        """Fit the estimator and export it; raises if the export predicts differently."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        params = {k: v for k, v in self.params.items() if k not in ("n_threads", "categorical_features")}
        cats = [c for c in features.columns if c in self.categorical]
        names = [*cats, *(c for c in features.columns if c not in cats)]
        categories = {c: tuple(sorted(features[c].cast(pl.String).drop_nulls().unique().to_list())) for c in cats}
        max_bins = int(params.get("max_bins", 255))
        crowded = {c: len(v) for c, v in categories.items() if len(v) > max_bins}
        if crowded:
            raise DataError(f"categorical features with more than max_bins={max_bins} categories: {crowded}")
        x = encode(features, names, categories)
        if cats:
            params["categorical_features"] = np.arange(len(names)) < len(cats)
        estimator_cls = HistGradientBoostingRegressor if self.task == "regression" else HistGradientBoostingClassifier
        with threadpool_limits(limits=self.params.get("n_threads"), user_api="openmp"):
            estimator = estimator_cls(**params).fit(x, labels)
            expected = self._expected(estimator, x)
        model = TreeEnsemble.from_estimator(estimator, names, categories)
        if model.task != self.task:
            raise DataError(f"labels {model.classes} do not make a {self.task} problem")
        if not np.array_equal(model.predict(x), expected):
            raise RetrainError(
                "exported trees predict differently from scikit-learn on the training rows; "
                "this scikit-learn version changed its tree format"
            )
        return model

    def _expected(self, estimator: Any, x: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return estimator.predict(x)
        proba = estimator.predict_proba(x)
        return proba[:, 1] if self.task == "binary" else proba

    def predict(self, model: TreeEnsemble, features: pl.DataFrame) -> np.ndarray:
        """P(1), (n, k) class probabilities, or values; columns are matched by name to the fitted ones."""
        absent = [c for c in model.feature_names if c not in features.columns]
        if absent:
            raise DataError(f"features lack columns {absent} the model was fitted on")
        return model.predict(encode(features, model.feature_names, model.categories))

    def predict_proba(self, model: TreeEnsemble, features: pl.DataFrame) -> np.ndarray:
        """Positive-class probabilities (binary models)."""
        return self.predict(model, features)

    def classes(self, model: TreeEnsemble) -> list[Any]:
        """The class labels saved with the model, in the order of :meth:`predict`'s columns."""
        return list(model.classes)

    def size(self, model: TreeEnsemble) -> int | None:
        """Number of boosting iterations."""
        return model.n_trees // len(model.arrays["baseline"])

    def save(self, model: TreeEnsemble, path: Path) -> None:
        """Write a zip of ``.npy`` arrays and ``meta.json``; same model, same bytes."""
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "task": model.task,
            "classes": list(model.classes),
            "features": list(model.feature_names),
            "categories": {name: list(values) for name, values in model.categories.items()},
        }
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            _write_entry(zf, "meta.json", json.dumps(meta, sort_keys=True).encode())
            for key in ARRAYS:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, model.arrays[key], allow_pickle=False)
                _write_entry(zf, f"{key}.npy", buffer.getvalue())

    def load(self, path: Path) -> TreeEnsemble:
        """Read a file written by :meth:`save`; never unpickles anything."""
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json"))
                version = meta.get("version")
                if meta.get("format") != FORMAT or version not in (1, FORMAT_VERSION):
                    raise ValueError(f"format {meta.get('format')!r} v{version!r}")
                present = [k for k in ARRAYS if not (version == 1 and k in _V1_ABSENT)]
                arrays = {k: np.lib.format.read_array(io.BytesIO(zf.read(f"{k}.npy")), allow_pickle=False) for k in present}
            if version == 1:  # binary, numeric only: no categorical splits
                n_nodes, n_features = len(arrays["value"]), len(meta["features"])
                arrays |= {
                    "is_categorical": np.zeros(n_nodes, ARRAYS["is_categorical"]),
                    "bitset": np.zeros(n_nodes, ARRAYS["bitset"]),
                    "left_bitsets": np.zeros(0, ARRAYS["left_bitsets"]),
                    "known_bitsets": np.zeros(0, ARRAYS["known_bitsets"]),
                    "f_idx_map": np.zeros(n_features, ARRAYS["f_idx_map"]),
                }
            return TreeEnsemble.from_arrays(
                arrays, meta["features"], meta.get("task", "binary"), meta.get("classes", [0, 1]), meta.get("categories", {})
            )
        except (OSError, KeyError, TypeError, AttributeError, ValueError, zipfile.BadZipFile) as exc:
            raise StoreError(f"{path} is not a {self.name} model file: {exc}") from exc


def _write_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)
