"""One MLflow run holding one pyfunc model, logged and registered through an ``MlflowClient`` only.

A model is logged the way ``mlflow.pyfunc.log_model`` logs it (a run, a logged model linked to it
as an output, the pyfunc folder saved locally and uploaded, the logged model finalized), but with
the client's URIs instead of MLflow's process-wide ones (``mlflow.set_tracking_uri``, the active
run), which are neither read nor changed: two retrainings logging to two servers in one process
do not mix. Imported only when a resource logs (``import mlflow`` costs seconds).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

LIBRARIES = ("retrain-plugins", "catboost", "scikit-learn", "polars", "pandas", "numpy", "pyarrow")
MAX_PARAM, MAX_TAG = 6000, 8000  # MLflow's limits for a param and a run tag value
# MLflow "models from code": the pyfunc is one of these files, copied into the model and run on load (no pickle).
MODEL_CODE = Path(__file__).resolve().parent / "model_code"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a logged model depends on (``mlflow`` included)."""
    out = {}
    for dist in LIBRARIES:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    out["mlflow"] = mlflow.__version__
    return out


def requirements(trainer: str, libraries: Mapping[str, str]) -> list[str]:
    """pip requirements of a model served by ``trainer`` (exact versions of this environment)."""
    wanted = ["retrain-plugins", "polars", "pandas", "numpy", "pyarrow"]
    wanted += ["catboost"] if trainer == "catboost" else ["scikit-learn"] if trainer.startswith("sklearn") else []
    return [f"{d}=={libraries[d]}" for d in wanted if d in libraries]


def text(value: Any, limit: int) -> str:
    """``value`` as a param or tag value (JSON unless a string), cut to MLflow's ``limit``."""
    out = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def number(value: Any) -> float | None:
    """``value`` as a metric, or ``None`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def schema_of(frame: pl.DataFrame) -> Schema:
    """The input schema of a model fed rows like ``frame`` (a training set's), as MLflow infers it.

    MLflow enforces it at predict time: an integer feature must then come as integers without
    nulls (it refuses int64 -> float64 as unsafe, and a null as a float), which is why the
    resource's ``signature: false`` logs none (README "MLflow").
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns: said above
        return infer_signature(frame.to_pandas()).inputs


def routed_signature(bundle: Mapping[str, Any], sample: pl.DataFrame, timestamp: str) -> ModelSignature:
    """The routed bundle's signature: ``sample``'s cohort and feature columns, an optional
    ``timestamp`` column, the outputs of ``RoutedPythonModel`` and the ``timestamp_column`` param."""
    cohort, features = bundle["cohort_column"], list(bundle["feature_columns"])
    inputs = schema_of(sample.with_columns(pl.col(cohort).cast(pl.String)))
    if timestamp not in (cohort, *features):  # optional: rows routed by time with params
        inputs = Schema([*inputs.inputs, ColSpec(DataType.datetime, timestamp, required=False)])
    if bundle.get("task") == "multiclass":
        kinds = {type(c) for c in bundle.get("classes") or []}
        label = DataType.long if kinds == {int} else DataType.double if kinds and kinds <= {int, float} else DataType.string
        outputs: list[Any] = [ColSpec(label, "prediction"), *(ColSpec(DataType.double, f"proba_{c}") for c in bundle["classes"])]
    else:
        outputs = [ColSpec(DataType.double, "prediction")]
    outputs += [ColSpec(DataType.string, "served_by"), ColSpec(DataType.string, "route")]
    params = ParamSchema([ParamSpec("timestamp_column", DataType.string, "")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)


def log_pyfunc(
    client: MlflowClient,
    experiment: str,
    *,
    run_name: str,
    name: str,
    code: str,
    artifacts: dict[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    signature: ModelSignature | None,
    pip_requirements: list[str],
    metadata: dict[str, Any],
    model_config: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Log the pyfunc of ``MODEL_CODE / code`` with ``artifacts`` in a new run: (run id, model id).

    The run ends FINISHED, or FAILED (and its logged model too) when any step raises.
    """
    run_id = client.create_run(experiment, run_name=run_name, tags=dict(tags)).info.run_id
    text_params = {k: text(v, MAX_PARAM) for k, v in params.items() if v is not None}
    logged = None
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()], params=[Param(k, v) for k, v in text_params.items()]
        )
        logged = client.create_logged_model(
            experiment, name=name, source_run_id=run_id, params=text_params, tags=dict(tags), model_type="retrain-plugins"
        )
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory(prefix="retrain-mlflow-") as tmp, warnings.catch_warnings():
            # MLflow's advice to add an input example is declined: it would run a prediction at every log.
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(local),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location, run_id=run_id, model_uuid=logged.model_id, model_id=logged.model_id
                ),
                python_model=str(MODEL_CODE / code),
                artifacts=artifacts,
                model_config=model_config,
                signature=signature,
                pip_requirements=pip_requirements,
                metadata=metadata,
                # Requirements are given, so nothing is inferred; and the uv project of whatever
                # folder the process runs in is no property of the model (MLflow would copy its
                # uv.lock and pyproject.toml into every model): point it at this empty folder.
                uv_project_path=tmp,
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        if logged is not None:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return run_id, logged.model_id


def register(client: MlflowClient, name: str, run_id: str, model_id: str, tags: Mapping[str, str]) -> ModelVersion:
    """A new version of registered model ``name`` for logged model ``model_id``."""
    # The logged model's artifact location, not ``models:/<model_id>``: MLflow 3.17's SQL registry
    # resolves a models:/ source through the process-wide tracking URI, not this client's.
    source = client.get_logged_model(model_id).artifact_location
    return client.create_model_version(name, source=source, run_id=run_id, tags=dict(tags), model_id=model_id)
