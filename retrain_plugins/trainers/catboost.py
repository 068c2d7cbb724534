"""CatBoost trainer: seeded, fixed thread count, native ``.cbm`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from retrain_plugins.trainers.base import Trainer


class CatBoostTrainer(Trainer):
    """Gradient-boosted trees with CatBoost.

    Defaults favour fast, reproducible fits of many small models: few borders and simple CTRs cut a
    small fit by a third (PITFALLS.md), ``allow_writing_files=False`` keeps ``catboost_info/`` out
    of the working directory, and a fixed ``random_seed``/``thread_count`` make refits identical.
    """

    name: ClassVar[str] = "catboost"
    suffix: ClassVar[str] = ".cbm"
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

    def fit(self, features: pl.DataFrame, labels: np.ndarray) -> Any:
        from catboost import CatBoostClassifier

        model = CatBoostClassifier(**self.params)
        model.fit(features.to_numpy(), labels)
        return model

    supports_warm_start: ClassVar[bool] = True

    def continue_fit(self, model: Any, features: pl.DataFrame, labels: np.ndarray) -> Any:
        """Append ``iterations`` trees to ``model``, fitted on the new rows (CatBoost ``init_model``)."""
        from catboost import CatBoostClassifier

        continued = CatBoostClassifier(**self.params)
        continued.fit(features.to_numpy(), labels, init_model=model)
        return continued

    def size(self, model: Any) -> int | None:
        return int(model.tree_count_)

    def predict_proba(self, model: Any, features: pl.DataFrame) -> np.ndarray:
        return model.predict_proba(features.cast(pl.Float64, strict=False).to_numpy())[:, 1]

    def save(self, model: Any, path: Path) -> None:
        model.save_model(str(path), format="cbm")

    def load(self, path: Path) -> Any:
        from catboost import CatBoostClassifier

        model = CatBoostClassifier()
        model.load_model(str(path), format="cbm")
        return model
