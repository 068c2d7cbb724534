"""A fitted ``HistGradientBoosting*`` estimator as plain numpy arrays, predicting as scikit-learn does.

:class:`TreeEnsemble` holds the raw baseline (one value per tree of an iteration: 1, or k for
multiclass) and, for every tree, the node fields scikit-learn itself predicts raw data with
(``value``, ``feature_idx``, ``num_threshold``, ``missing_go_to_left``, ``left``, ``right``,
``is_leaf``, ``is_categorical``, ``bitset_idx``), the raw left-category bitsets of the categorical
splits, and the known-category bitsets of the categorical features. :meth:`TreeEnsemble.raw_predict`
walks them with numpy exactly as scikit-learn's ``_predict_one_from_raw_data`` does:

- NaN goes to the side ``missing_go_to_left`` names;
- a categorical split sends a negative value to the missing side, a category in its left bitset
  left, a known category right, and an unknown category to the missing side (bitsets are eight
  uint32 words; category ``c`` is bit ``c % 32`` of word ``c // 32``);
- a numeric split sends ``x <= num_threshold`` left.

Leaf values are added to the baseline tree by tree, in boosting order, into an (n, k) float64
Fortran-ordered array, and the inverse link is the one scikit-learn applies (``expit``;
``sklearn.utils.extmath.softmax``; identity for squared error): the same operations in the same
order, hence bit-identical outputs.

Categorical inputs are category codes (float64; ``0 .. m-1``, NaN missing): the trainer encodes
strings as the index of the value in the sorted training categories, and scikit-learn's internal
ordinal encoder then maps every code to itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from retrain_plugins.errors import DataError
from retrain_plugins.tasks import Task

# name -> dtype of every array in the artifact; node arrays concatenate all trees
ARRAYS: dict[str, np.dtype] = {
    "baseline": np.dtype("<f8"),  # shape (k,): raw prediction before any tree, per tree of an iteration
    "roots": np.dtype("<i8"),  # index of each tree's root node, in boosting order (iteration-major)
    "value": np.dtype("<f8"),
    "feature": np.dtype("<i8"),
    "threshold": np.dtype("<f8"),
    "missing_left": np.dtype("u1"),
    "left": np.dtype("<i8"),  # global node index; a leaf points to itself
    "right": np.dtype("<i8"),
    "is_leaf": np.dtype("u1"),
    "is_categorical": np.dtype("u1"),
    "bitset": np.dtype("<i8"),  # global row of left_bitsets of a categorical split, else 0
    "left_bitsets": np.dtype("<u4"),  # (categorical splits x 8) words, flattened
    "known_bitsets": np.dtype("<u4"),  # (categorical features x 8) words, flattened
    "f_idx_map": np.dtype("<u4"),  # feature -> row of known_bitsets
}
NODE_ARRAYS = ("value", "feature", "threshold", "missing_left", "left", "right", "is_leaf", "is_categorical", "bitset")
_CELLS_PER_CHUNK = 1 << 20  # rows x trees walked at once


def _task_of(estimator: Any) -> tuple[Task, list[Any]]:
    if not hasattr(estimator, "classes_"):
        return "regression", []
    classes = [c.item() if isinstance(c, np.generic) else c for c in estimator.classes_]
    return ("binary" if classes == [0, 1] else "multiclass"), classes


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """A fitted ``HistGradientBoostingClassifier``/``Regressor`` as plain arrays (see module docstring).

    Attributes:
        arrays: The arrays named in ``ARRAYS``, with those dtypes.
        feature_names: Column names the model was fitted on, in matrix order (categorical first).
        task: ``binary`` (classes [0, 1]), ``multiclass`` or ``regression``.
        classes: The class labels (binary ``[0, 1]``, regression ``[]``), in output column order.
        categories: For each categorical feature, its categories; code ``i`` is ``categories[i]``.
    """

    arrays: Mapping[str, np.ndarray]
    feature_names: tuple[str, ...]
    task: Task = "binary"
    classes: tuple[Any, ...] = (0, 1)
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_estimator(
        cls, estimator: Any, feature_names: Sequence[str], categories: Mapping[str, Sequence[str]] | None = None
    ) -> TreeEnsemble:
        """Export a fitted estimator; ``categories`` names the categorical features (fitted first)."""
        categories = {k: tuple(v) for k, v in (categories or {}).items()}
        task, classes = _task_of(estimator)
        if estimator.n_features_in_ != len(feature_names):
            raise DataError(f"estimator has {estimator.n_features_in_} features, names are {list(feature_names)}")
        is_cat = np.zeros(len(feature_names), dtype=bool)
        if estimator.is_categorical_ is not None:
            is_cat = np.asarray(estimator._is_categorical_remapped, dtype=bool)
            if not np.array_equal(np.asarray(estimator.is_categorical_), is_cat):
                raise DataError("categorical features must come first in the fitted matrix")
        if [n for n, c in zip(feature_names, is_cat) if c] != list(categories):
            raise DataError(f"categorical features of the estimator are not {list(categories)}")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in NODE_ARRAYS}
        bitsets: list[np.ndarray] = []
        roots: list[int] = []
        offset = n_bitsets = 0
        for iteration in estimator._predictors:
            for predictor in iteration:
                nodes = predictor.nodes
                own = np.arange(offset, offset + len(nodes), dtype=np.int64)
                leaf = nodes["is_leaf"].astype(bool)
                categorical = nodes["is_categorical"].astype(bool)
                roots.append(offset)
                parts["value"].append(nodes["value"])
                parts["feature"].append(nodes["feature_idx"])
                parts["threshold"].append(nodes["num_threshold"])
                parts["missing_left"].append(nodes["missing_go_to_left"])
                parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
                parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
                parts["is_leaf"].append(nodes["is_leaf"])
                parts["is_categorical"].append(nodes["is_categorical"])
                parts["bitset"].append(np.where(categorical, nodes["bitset_idx"].astype(np.int64) + n_bitsets, 0))
                raw = np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
                bitsets.append(raw)
                n_bitsets += len(raw)
                offset += len(nodes)
        arrays = {k: np.concatenate(v).astype(ARRAYS[k]) for k, v in parts.items()}
        arrays["baseline"] = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
        arrays["roots"] = np.asarray(roots, dtype=np.int64)
        arrays["left_bitsets"] = np.concatenate(bitsets).astype(ARRAYS["left_bitsets"]).reshape(-1)
        known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        arrays["known_bitsets"] = np.asarray(known, dtype=ARRAYS["known_bitsets"]).reshape(-1)
        arrays["f_idx_map"] = np.asarray(f_idx_map, dtype=ARRAYS["f_idx_map"])
        return cls.from_arrays(arrays, feature_names, task, classes, categories)

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        feature_names: Sequence[str],
        task: Task = "binary",
        classes: Sequence[Any] = (0, 1),
        categories: Mapping[str, Sequence[str]] | None = None,
    ) -> TreeEnsemble:
        """Build from saved arrays, checking dtypes, shapes and that every tree walk ends at a leaf."""
        missing = sorted(set(ARRAYS) - set(arrays))
        if missing:
            raise ValueError(f"missing arrays {missing}")
        for key, dtype in ARRAYS.items():
            if arrays[key].dtype != dtype or arrays[key].ndim != 1:
                raise ValueError(f"array {key!r} is {arrays[key].dtype}{arrays[key].shape}, expected 1-d {dtype}")
        n_nodes = len(arrays["value"])
        if any(len(arrays[k]) != n_nodes for k in NODE_ARRAYS):
            raise ValueError("node arrays differ in length")
        roots, inner = arrays["roots"], arrays["is_leaf"] == 0
        k = len(arrays["baseline"])
        if k == 0 or len(roots) == 0 or len(roots) % k or roots[0] != 0 or roots[-1] >= n_nodes:
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
        n_splits, n_known = len(arrays["left_bitsets"]) // 8, len(arrays["known_bitsets"]) // 8
        if len(arrays["left_bitsets"]) % 8 or len(arrays["known_bitsets"]) % 8 or len(arrays["f_idx_map"]) != len(feature_names):
            raise ValueError("bad bitset arrays")
        split_cat = inner & (arrays["is_categorical"] != 0)
        if np.any(split_cat & ((arrays["bitset"] < 0) | (arrays["bitset"] >= n_splits))):
            raise ValueError("a categorical split points at an unknown bitset")
        if np.any(split_cat & (arrays["f_idx_map"][arrays["feature"]] >= n_known)):
            raise ValueError("a categorical split uses a feature without known categories")
        return cls(
            {key: np.asarray(arrays[key]) for key in ARRAYS},
            tuple(feature_names),
            task,
            tuple(classes),
            {name: tuple(values) for name, values in (categories or {}).items()},
        )

    @property
    def n_trees(self) -> int:
        """Number of trees (boosting iterations x trees per iteration)."""
        return len(self.arrays["roots"])

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        """Raw (link-space) predictions, shape (n, k), for a float64 matrix in ``feature_names`` order."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise DataError(f"expected {len(self.feature_names)} feature columns, got shape {x.shape}")
        out = np.empty((x.shape[0], len(self.arrays["baseline"])), dtype=np.float64, order="F")
        step = max(1, _CELLS_PER_CHUNK // self.n_trees)
        for start in range(0, x.shape[0], step):
            out[start : start + step] = self._raw_chunk(x[start : start + step])
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """What scikit-learn's ``predict_proba`` (P(1) for binary) or ``predict`` (regression) gives."""
        raw = self.raw_predict(x)
        if self.task == "regression":
            return raw[:, 0]
        if self.task == "binary":
            return expit(raw[:, 0])
        if raw.shape[1] == 1:  # two classes: scikit-learn fits one tree per iteration
            proba = np.empty((raw.shape[0], 2), dtype=np.float64)
            proba[:, 1] = expit(raw[:, 0])
            proba[:, 0] = 1 - proba[:, 1]
            return proba
        from sklearn.utils.extmath import softmax  # the function scikit-learn's multinomial link uses

        return softmax(raw)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class (binary), as ``HistGradientBoostingClassifier.predict_proba``."""
        return self.predict(x)

    def _raw_chunk(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        n_rows, n_features = x.shape
        zero = np.zeros(8, dtype=np.uint32)  # a row to index when there are no categorical splits
        left_sets = np.vstack([a["left_bitsets"].reshape(-1, 8), zero])
        known_sets = np.vstack([a["known_bitsets"].reshape(-1, 8), zero])
        node = np.repeat(a["roots"][None, :], n_rows, axis=0)  # (rows, trees); a leaf points to itself
        cell = (np.arange(n_rows) * n_features)[:, None]
        flat = x.ravel()
        while (a["is_leaf"][node] == 0).any():
            feature = a["feature"][node]
            v = flat[cell + feature]
            missing_left = a["missing_left"][node] != 0
            nan = np.isnan(v)
            # scikit-learn casts to uint8; the trainer only ever feeds codes 0..254 (or NaN)
            code = np.where(np.isfinite(v) & (v >= 0) & (v < 256), v, 0).astype(np.int64)
            word, bit = code // 32, (code % 32).astype(np.uint32)
            in_left = (left_sets[a["bitset"][node], word] >> bit) & 1 != 0
            in_known = (known_sets[a["f_idx_map"][feature], word] >> bit) & 1 != 0
            categorical = np.where(v < 0, missing_left, np.where(in_left, True, np.where(in_known, False, missing_left)))
            go_left = np.where(nan, missing_left, np.where(a["is_categorical"][node] != 0, categorical, v <= a["threshold"][node]))
            node = np.where(go_left, a["left"][node], a["right"][node])
        leaves = np.ascontiguousarray(a["value"][node].T)  # (trees, rows)
        k = len(a["baseline"])
        raw = np.zeros((n_rows, k), dtype=np.float64, order="F")
        raw += a["baseline"][None, :]
        for tree, values in enumerate(leaves):  # one tree at a time, in boosting order, like scikit-learn
            raw[:, tree % k] += values
        return raw
