"""MLflow pyfunc wrappers: the routed bundle and one sub-model, loadable with ``mlflow.pyfunc.load_model``.

Both load from the artifacts MLflow logged with them (never from the retraining's store), so a
registered version serves in a fresh process on another host with ``retrain-plugins`` installed.
The instances hold no state before ``load_context``: MLflow pickles them by reference to this
module, and the model files themselves stay in their native format (CatBoost ``.cbm``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from mlflow.pyfunc import PythonModel

STORE_ARTIFACT = "store"  # a folder laid out like the model store: bundle.json + what it routes to
MODEL_ARTIFACT = "model"  # one sub-model file


def as_polars(model_input: Any) -> pl.DataFrame:
    """A pyfunc input (pandas or polars frame, or a dict of columns) as a polars frame."""
    if isinstance(model_input, pl.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return pl.DataFrame(model_input)
    return pl.from_pandas(model_input)


class RoutedPythonModel(PythonModel):
    """``RoutedModel.predict`` as a pyfunc: ``prediction`` (and ``proba_<class>`` for multiclass),
    ``served_by`` and ``route`` per row, the rows in input order.

    ``params={"timestamp_column": "<column>"}`` routes each row by its time, as
    ``RoutedModel.predict(frame, timestamp_column=...)`` does. MLflow's signature takes datetime
    columns timezone-naive only: naive times are UTC here, as everywhere in the library.
    """

    def load_context(self, context: Any) -> None:
        from retrain_plugins.routing import RoutedModel

        self._routed = RoutedModel.load(Path(context.artifacts[STORE_ARTIFACT]))

    # ``pd.DataFrame`` is a type hint MLflow infers no schema from: the logged signature is the schema.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = as_polars(model_input)
        timestamp: str | None = (params or {}).get("timestamp_column") or None
        if timestamp is not None and isinstance(kind := frame.schema.get(timestamp), pl.Datetime) and kind.time_zone is None:
            frame = frame.with_columns(pl.col(timestamp).dt.replace_time_zone("UTC"))
        scored = self._routed.predict(frame, timestamp_column=timestamp)
        outputs = ["prediction"]
        if self._routed.task == "multiclass":
            outputs += [f"proba_{c}" for c in self._routed.classes]
        return scored.select([*outputs, "served_by", "route"]).to_pandas()


class SubModelPythonModel(PythonModel):
    """One sub-model as a pyfunc: the trainer's ``predict`` on the model's feature columns.

    ``model_config`` says how to load it: ``trainer``, ``trainer_params``, ``task``,
    ``categorical_features``, ``feature_columns``.
    """

    def load_context(self, context: Any) -> None:
        from retrain_plugins.trainers import make_trainer

        config = context.model_config
        self._features = list(config["feature_columns"])
        self._trainer = make_trainer(
            config["trainer"],
            config.get("trainer_params"),
            task=config.get("task") or "binary",
            categorical=config.get("categorical_features") or (),
        )
        self._model = self._trainer.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self._trainer.predict(self._model, as_polars(model_input).select(self._features))
