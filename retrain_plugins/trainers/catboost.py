"""CatBoost trainer: every task, native categorical features, seeded, native ``.cbm`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from retrain_plugins.errors import DataError
from retrain_plugins.trainers.base import Trainer

#: What a null in a categorical column becomes: CatBoost refuses None in categorical features.
MISSING_CATEGORY = "__missing__"
_LOSS = {"binary": "Logloss", "multiclass": "MultiClass", "regression": "RMSE"}


class CatBoostTrainer(Trainer):
    """Gradient-boosted trees with CatBoost, for binary, multiclass and regression tasks.

    binary: ``CatBoostClassifier`` (Logloss); multiclass: ``CatBoostClassifier`` with
    ``MultiClass`` loss and ``class_names`` set to the sorted classes of the training rows (the
    column order of :meth:`predict`, saved in the model); regression: ``CatBoostRegressor``
    (RMSE). Categorical columns are passed as ``cat_features`` by name in a ``catboost.Pool``
    built from a pandas frame; their nulls become ``"__missing__"`` at fit and at predict time.

    Defaults favour fast, reproducible fits of many small models: few borders and simple CTRs cut a
    small fit by a third (PITFALLS.md), ``allow_writing_files=False`` keeps ``catboost_info/`` out
    of the working directory, and a fixed ``random_seed``/``thread_count`` make refits identical.
    """

    name: ClassVar[str] = "catboost"
    suffix: ClassVar[str] = ".cbm"
    tasks: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass", "regression"})
    supports_categorical: ClassVar[bool] = True
    library: ClassVar[str] = "catboost"
    defaults: ClassVar[dict[str, Any]] = {
        "iterations": 200,
        "depth": 6,
        "learning_rate": 0.08,
        "border_count": 32,
        "max_ctr_complexity": 1,
        "random_seed": 0,
        "thread_count": 2,
        "allow_writing_files": False,
        "verbose": False,
    }

    def _estimator(self, **extra: Any) -> Any:
        from catboost import CatBoostClassifier, CatBoostRegressor

        params = {"loss_function": _LOSS[self.task], **self.params, **extra}
        return (CatBoostRegressor if self.task == "regression" else CatBoostClassifier)(**params)

    def check_params(self) -> None:
        """Construct the estimator (unknown parameters) and fit it on 8 rows for one tree (their values)."""
        import numpy as np

        rows = np.arange(8, dtype=float).reshape(-1, 1)
        labels = {"regression": rows[:, 0], "binary": np.array([0, 1] * 4), "multiclass": np.array(["a", "b"] * 4)}[self.task]
        iterations = self.params.get("iterations")
        one = {"iterations": 1} if isinstance(iterations, int) and iterations >= 1 else {}
        from catboost import CatBoostError

        try:
            self._estimator(**one, allow_writing_files=False, thread_count=1).fit(rows, labels)
        except CatBoostError as exc:
            raise ValueError(str(exc).strip()) from exc

    def _pool(self, features: pl.DataFrame, labels: np.ndarray | None, categorical: list[str]) -> Any:
        from catboost import Pool

        frame = features.with_columns(
            [pl.col(c).cast(pl.String).fill_null(MISSING_CATEGORY) for c in categorical]
            + [pl.col(c).cast(pl.Float64, strict=False) for c in features.columns if c not in categorical]
        )
        data = frame.to_pandas() if categorical else frame.to_numpy()
        kwargs: dict[str, Any] = {"cat_features": categorical} if categorical else {}
        if not categorical:
            kwargs["feature_names"] = list(features.columns)
        return Pool(data, label=labels, **kwargs)

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Fit a fresh model of ``self.task``; categorical columns are ``self.categorical``."""
        extra = {"class_names": sorted(set(labels.tolist()))} if self.task == "multiclass" else {}
        model = self._estimator(**extra)
        model.fit(self._pool(features, labels, list(self.categorical)))
        return model

    supports_warm_start: ClassVar[bool] = True

    def continue_fit(self, model: Any, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Append ``iterations`` trees to ``model``, fitted on the new rows (CatBoost ``init_model``).

        A multiclass model keeps its classes; new rows of a class it does not know are refused.
        """
        extra: dict[str, Any] = {}
        if self.task == "multiclass":
            known = self.classes(model)
            unknown = sorted(set(labels.tolist()) - set(known), key=str)
            if unknown:
                raise DataError(f"new rows hold classes {unknown} the current model does not know; refit instead")
            extra["class_names"] = known
        continued = self._estimator(**extra)
        continued.fit(self._pool(features, labels, list(self.categorical)), init_model=model)
        return continued

    def size(self, model: Any) -> int | None:
        """Number of trees."""
        return int(model.tree_count_)

    def _input(self, model: Any, features: pl.DataFrame) -> Any:
        names = list(model.feature_names_)
        if names == [str(i) for i in range(len(names))] and not set(names) & set(features.columns):
            names = list(features.columns)[: len(names)]  # fitted on an unnamed matrix (older models)
        absent = [c for c in names if c not in features.columns]
        if absent:
            raise DataError(f"features lack columns {absent} the model was fitted on")
        categorical = [names[i] for i in model.get_cat_feature_indices()]
        return self._pool(features.select(names), None, categorical)

    def predict(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        """P(1) (binary), (n, k) probabilities in :meth:`classes` order (multiclass), or values."""
        pool = self._input(model, features)
        if self.task == "regression":
            return np.asarray(model.predict(pool), dtype=np.float64)
        proba = model.predict_proba(pool)
        return proba[:, 1] if self.task == "binary" else proba

    def predict_proba(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        """Probability of class 1 (binary models)."""
        return model.predict_proba(self._input(model, features))[:, 1]

    def classes(self, model: Any) -> list[Any]:
        """The model's classes, as saved in it (multiclass: the order of :meth:`predict`'s columns)."""
        if self.task == "regression":
            return []
        return [c.item() if isinstance(c, np.generic) else c for c in model.classes_]

    def save(self, model: Any, path: Path) -> None:
        """Write a native ``.cbm`` file."""
        model.save_model(str(path), format="cbm")

    def load(self, path: Path) -> Any:
        """Read a ``.cbm`` file as a classifier (binary, multiclass) or regressor."""
        from catboost import CatBoostClassifier, CatBoostRegressor

        model = CatBoostRegressor() if self.task == "regression" else CatBoostClassifier()
        model.load_model(str(path), format="cbm")
        return model
