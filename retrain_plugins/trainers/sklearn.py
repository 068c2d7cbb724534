"""scikit-learn ``HistGradientBoostingClassifier`` trainer, saved as plain arrays, never pickled.

A fitted estimator is reduced to a :class:`TreeEnsemble`: its raw (log-odds) baseline and, for
every tree, the node fields scikit-learn itself predicts raw data with (``value``,
``feature_idx``, ``num_threshold``, ``missing_go_to_left``, ``left``, ``right``, ``is_leaf``).
:meth:`TreeEnsemble.predict_proba` walks them with numpy exactly as scikit-learn does (NaN goes
to the side ``missing_go_to_left`` names, otherwise ``x <= num_threshold`` goes left), adds the
leaf values to the baseline tree by tree in float64, and applies ``scipy.special.expit``: the
same operations in the same order, hence bit-identical probabilities. :meth:`fit` verifies that
on the training rows and refuses to return a model that disagrees.

The artifact is a zip of ``.npy`` arrays plus ``meta.json`` (``numpy.load(path,
allow_pickle=False)`` opens it), written with fixed timestamps so one model always gives the
same bytes: the model store names artifacts by their hash.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from scipy.special import expit

from retrain_plugins.errors import DataError, RetrainError, SpecError, StoreError
from retrain_plugins.trainers.base import Trainer

FORMAT = "retrain_plugins.hist_gradient_boosting"
FORMAT_VERSION = 1
# name -> dtype of every array in the artifact; node arrays concatenate all trees
_ARRAYS: dict[str, np.dtype] = {
    "baseline": np.dtype("<f8"),  # shape (1,): raw prediction before any tree
    "roots": np.dtype("<i8"),  # index of each tree's root node, in boosting order
    "value": np.dtype("<f8"),
    "feature": np.dtype("<i8"),
    "threshold": np.dtype("<f8"),
    "missing_left": np.dtype("u1"),
    "left": np.dtype("<i8"),  # global node index; a leaf points to itself
    "right": np.dtype("<i8"),
    "is_leaf": np.dtype("u1"),
}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_CELLS_PER_CHUNK = 1 << 20  # rows x trees walked at once


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """A fitted binary ``HistGradientBoostingClassifier`` as plain arrays (see module docstring).

    Attributes:
        arrays: The arrays named in ``_ARRAYS``, with those dtypes.
        feature_names: Column names the model was fitted on, in order.
    """

    arrays: Mapping[str, np.ndarray]
    feature_names: tuple[str, ...]

    @classmethod
    def from_estimator(cls, estimator: Any, feature_names: Sequence[str]) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier`` without categorical splits."""
        if estimator.n_trees_per_iteration_ != 1 or [int(c) for c in estimator.classes_] != [0, 1]:
            raise DataError(f"expected a binary classifier with classes [0, 1], got {estimator.classes_}")
        if estimator.n_features_in_ != len(feature_names):
            raise DataError(f"estimator has {estimator.n_features_in_} features, names are {list(feature_names)}")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _ARRAYS if k not in ("baseline", "roots")}
        roots: list[int] = []
        offset = 0
        for iteration in estimator._predictors:
            for predictor in iteration:
                nodes = predictor.nodes
                if nodes["is_categorical"].any():
                    raise SpecError("the sklearn_hgb trainer does not support categorical splits")
                own = np.arange(offset, offset + len(nodes), dtype=np.int64)
                leaf = nodes["is_leaf"].astype(bool)
                roots.append(offset)
                parts["value"].append(nodes["value"])
                parts["feature"].append(nodes["feature_idx"])
                parts["threshold"].append(nodes["num_threshold"])
                parts["missing_left"].append(nodes["missing_go_to_left"])
                parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
                parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
                parts["is_leaf"].append(nodes["is_leaf"])
                offset += len(nodes)
        arrays = {k: np.concatenate(v).astype(_ARRAYS[k]) for k, v in parts.items()}
        arrays["baseline"] = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1)
        arrays["roots"] = np.asarray(roots, dtype=np.int64)
        return cls.from_arrays(arrays, feature_names)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], feature_names: Sequence[str]) -> TreeEnsemble:
        """Build from saved arrays, checking dtypes and that every tree walk ends at a leaf."""
        missing = sorted(set(_ARRAYS) - set(arrays))
        if missing:
            raise ValueError(f"missing arrays {missing}")
        for key, dtype in _ARRAYS.items():
            if arrays[key].dtype != dtype or arrays[key].ndim != 1:
                raise ValueError(f"array {key!r} is {arrays[key].dtype}{arrays[key].shape}, expected 1-d {dtype}")
        n_nodes = len(arrays["value"])
        if any(len(arrays[k]) != n_nodes for k in _ARRAYS if k not in ("baseline", "roots")):
            raise ValueError("node arrays differ in length")
        roots, inner = arrays["roots"], arrays["is_leaf"] == 0
        if len(arrays["baseline"]) != 1 or len(roots) == 0 or roots[0] != 0 or roots[-1] >= n_nodes:
            raise ValueError("bad baseline or tree roots")
        if np.any(np.diff(roots) <= 0):
            raise ValueError("tree roots are not increasing")
        tree_end = np.repeat(np.append(roots[1:], n_nodes), np.diff(np.append(roots, n_nodes)))
        own = np.arange(n_nodes)
        for child in (arrays["left"], arrays["right"]):  # a split's children follow it in its tree,
            if np.any(np.where(inner, (child <= own) | (child >= tree_end), child != own)):  # a leaf is fixed
                raise ValueError("a split node points outside its tree, or a leaf away from itself")
        if np.any((arrays["feature"] < 0) | (arrays["feature"] >= len(feature_names))):
            raise ValueError("a node uses an unknown feature")
        return cls({k: np.asarray(arrays[k]) for k in _ARRAYS}, tuple(feature_names))

    @property
    def n_trees(self) -> int:
        """Number of trees (boosting iterations)."""
        return len(self.arrays["roots"])

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of the positive class for a float64 matrix with ``len(feature_names)`` columns."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise DataError(f"expected {len(self.feature_names)} feature columns, got shape {x.shape}")
        out = np.empty(x.shape[0], dtype=np.float64)
        step = max(1, _CELLS_PER_CHUNK // self.n_trees)
        for start in range(0, x.shape[0], step):
            out[start : start + step] = self._raw_chunk(x[start : start + step])
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class, as ``HistGradientBoostingClassifier.predict_proba``."""
        return expit(self.raw_predict(x))

    def _raw_chunk(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        n_rows, n_features = x.shape
        node = np.repeat(a["roots"][None, :], n_rows, axis=0)  # (rows, trees); a leaf points to itself
        cell = (np.arange(n_rows) * n_features)[:, None]
        flat = x.ravel()
        while (a["is_leaf"][node] == 0).any():
            v = flat[cell + a["feature"][node]]
            go_left = (v <= a["threshold"][node]) | (np.isnan(v) & (a["missing_left"][node] != 0))
            node = np.where(go_left, a["left"][node], a["right"][node])
        leaves = np.ascontiguousarray(a["value"][node].T)  # (trees, rows)
        raw = np.full(n_rows, a["baseline"][0])
        for values in leaves:  # one tree at a time, in boosting order, like scikit-learn
            raw += values
        return raw


class HistGradientBoostingTrainer(Trainer):
    """Gradient-boosted trees with scikit-learn's ``HistGradientBoostingClassifier``.

    ``params`` go to the estimator, except ``n_threads``: the OpenMP threads it fits with, set
    through threadpoolctl (``None``: no limit; the trees do not depend on it). One thread is
    several times faster than two for the small per-partition fits here on a busy machine, where
    OpenMP spin-waits cost more than they save. Defaults are close to the CatBoost trainer's (200
    rounds, depth 6, learning rate 0.08); ``early_stopping=False`` and a fixed ``random_state``
    make refits identical. Categorical features are not supported (features arrive as float64).
    """

    name: ClassVar[str] = "sklearn_hgb"
    suffix: ClassVar[str] = ".npz"
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

    def __init__(self, params: Mapping[str, Any] | None = None):
        super().__init__(params)
        if self.params.get("categorical_features", None) not in (None, "from_dtype"):
            raise SpecError("trainer sklearn_hgb does not support categorical_features")
        if self.params.get("loss", "log_loss") != "log_loss":
            raise SpecError("trainer sklearn_hgb supports only loss='log_loss'")

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> TreeEnsemble:
        """Fit the estimator and export it; raises if the export predicts differently."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        params = {k: v for k, v in self.params.items() if k != "n_threads"}
        x = features.cast(pl.Float64, strict=False).to_numpy()
        with threadpool_limits(limits=self.params.get("n_threads"), user_api="openmp"):
            estimator = HistGradientBoostingClassifier(**params).fit(x, labels)
            expected = estimator.predict_proba(x)[:, 1]
        model = TreeEnsemble.from_estimator(estimator, features.columns)
        if not np.array_equal(model.predict_proba(x), expected):
            raise RetrainError(
                "exported trees predict differently from scikit-learn on the training rows; "
                "this scikit-learn version changed its tree format"
            )
        return model

    def predict_proba(self, model: TreeEnsemble, features: pl.DataFrame) -> np.ndarray:
        """Positive-class probabilities; columns are matched by name to the fitted ones."""
        absent = [c for c in model.feature_names if c not in features.columns]
        if absent:
            raise DataError(f"features lack columns {absent} the model was fitted on")
        x = features.select(model.feature_names).cast(pl.Float64, strict=False).to_numpy()
        return model.predict_proba(x)

    def save(self, model: TreeEnsemble, path: Path) -> None:
        """Write a zip of ``.npy`` arrays and ``meta.json``; same model, same bytes."""
        features = list(model.feature_names)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "classes": [0, 1], "features": features}
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            _write_entry(zf, "meta.json", json.dumps(meta, sort_keys=True).encode())
            for key in _ARRAYS:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, model.arrays[key], allow_pickle=False)
                _write_entry(zf, f"{key}.npy", buffer.getvalue())

    def load(self, path: Path) -> TreeEnsemble:
        """Read a file written by :meth:`save`; never unpickles anything."""
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json"))
                if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                    raise ValueError(f"format {meta.get('format')!r} v{meta.get('version')!r}")
                arrays = {
                    k: np.lib.format.read_array(io.BytesIO(zf.read(f"{k}.npy")), allow_pickle=False)
                    for k in _ARRAYS
                }
            return TreeEnsemble.from_arrays(arrays, meta["features"])
        except (OSError, KeyError, TypeError, AttributeError, ValueError, zipfile.BadZipFile) as exc:
            raise StoreError(f"{path} is not a {self.name} model file: {exc}") from exc


def _write_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)
