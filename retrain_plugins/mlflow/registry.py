"""The MLflow calls behind :class:`~retrain_plugins.mlflow.resource.MLflowRegistryResource`.

Imported only when a resource's method runs (``import mlflow`` costs seconds). Everything goes
through one ``MlflowClient`` built from the resource's URIs: no process-wide MLflow state
(``mlflow.set_tracking_uri``, the active run) is read or changed, so two retrainings logging to two
servers in one process do not mix. A model is logged the way ``mlflow.pyfunc.log_model`` logs it
(a run, a logged model linked to it as an output, the pyfunc folder saved locally and uploaded,
the logged model finalized), then registered from ``models:/<model_id>``.

The model store stays the source of truth: a version is found again by its ``partition`` and
``sha256`` tags, so logging is idempotent, and every bundle publication re-checks each routed
sub-model's version and alias (what a crash, an unreachable server or a rollback without
``--mlflow`` left behind is repaired there).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunStatus
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from retrain_plugins.errors import RetrainError
from retrain_plugins.layout import model_store, training_set_rel, training_sets
from retrain_plugins.mlflow.pyfunc import MODEL_ARTIFACT, STORE_ARTIFACT
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.routing import BUNDLE

if TYPE_CHECKING:
    from retrain_plugins.mlflow.resource import MLflowRegistryResource
    from retrain_plugins.spec import RetrainingSpec

LIBRARIES = ("retrain-plugins", "catboost", "scikit-learn", "polars", "pandas", "numpy", "pyarrow")
METRICS = ("rows", "rows_train", "rows_holdout", "rows_trained", "label_rate", "label_mean", "n_classes",
           "training_seconds", "model_size", "size_bytes")
LINEAGE = ("fingerprint", "definition", "feature_service", "feature_service_version", "reason", "gate", "strategy",
           "trainer", "task", "max_label_time", "window_start")
_MAX_PARAM, _MAX_TAG = 6000, 8000  # MLflow's limits for a param and a run tag value
_MISSING = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
# MLflow "models from code": the pyfunc is this file, copied into the model and run on load (no pickle).
MODEL_CODE = Path(__file__).resolve().parent / "model_code"


class RegistryError(RetrainError):
    """The MLflow tracking server or registry refused or failed a call."""


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


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _schema_of(frame: pl.DataFrame) -> Schema:
    """The input schema of a model fed rows like ``frame`` (a training set's), as MLflow infers it.

    MLflow enforces it at predict time: an integer feature must then come as integers without
    nulls (it refuses int64 -> float64 as unsafe, and a null as a float), which is why the
    resource's ``signature: false`` logs none (README "MLflow").
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns: said above
        return infer_signature(frame.to_pandas()).inputs


def _quoted(value: str) -> str:
    """A value in an MLflow search filter."""
    return f'"{value}"' if "'" in value else f"'{value}'"


class Registry:
    """One retraining's view of an MLflow tracking store and registry (see the module docstring)."""

    def __init__(self, settings: "MLflowRegistryResource", spec: "RetrainingSpec"):
        self.settings = settings
        self.spec = spec
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri or settings.tracking_uri)
        self.store = model_store(spec)
        self.libraries = library_versions()
        self._experiment: str | None = None

    def _where(self) -> str:
        return f"MLflow at {self.settings.tracking_uri}"

    # -- experiment, registered models, versions ------------------------------------------------

    def experiment_id(self) -> str:
        if self._experiment is None:
            name = self.settings.experiment_name(self.spec)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiment = self.client.create_experiment(
                        name, artifact_location=self.settings.artifact_location, tags={"retraining": self.spec.name}
                    )
                except MlflowException:  # created meanwhile by another process
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self._experiment = found.experiment_id
        return self._experiment

    def registered_model(self, name: str, description: str) -> RegisteredModel:
        """``name``, created (with ``description``) if it does not exist yet."""
        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != _MISSING:
                raise
        try:
            return self.client.create_registered_model(name, tags={"retraining": self.spec.name}, description=description)
        except MlflowException:  # created meanwhile
            return self.client.get_registered_model(name)

    def versions(self, name: str) -> dict[tuple[str, str], ModelVersion]:
        """``name``'s versions by (``partition``, ``sha256``) tag; the newest one where several match."""
        out: dict[tuple[str, str], ModelVersion] = {}
        token = None
        while True:
            page = self.client.search_model_versions(f"name = {_quoted(name)}", page_token=token)
            for v in page:
                found = (v.tags.get("partition"), v.tags.get("sha256"))
                if None not in found and (found not in out or int(v.version) > int(out[found].version)):
                    out[found] = v
            token = page.token
            if not token:
                return out

    # -- logging one model --------------------------------------------------------------------

    def _log_model(
        self,
        *,
        run_name: str,
        name: str,
        python_model: Path,
        artifacts: dict[str, str],
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        signature: ModelSignature | None,
        model_config: dict[str, Any] | None = None,
        trainer: str,
    ) -> tuple[str, str]:
        """Log one pyfunc model in a new run, as ``mlflow.pyfunc.log_model`` does: (run id, model id)."""
        experiment = self.experiment_id()
        libs = {f"library.{k}": v for k, v in self.libraries.items()}
        run = self.client.create_run(experiment, run_name=run_name, tags={**tags, **libs})
        run_id = run.info.run_id
        text_params = {k: _text(v, _MAX_PARAM) for k, v in params.items() if v is not None}
        logged = None
        try:
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in text_params.items()],
            )
            logged = self.client.create_logged_model(
                experiment, name=name, source_run_id=run_id, params=text_params, tags=dict(tags), model_type="retrain-plugins"
            )
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            with tempfile.TemporaryDirectory(prefix="retrain-mlflow-") as tmp, warnings.catch_warnings():
                # MLflow's advice to add an input example is declined: it would run a prediction at every log.
                warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
                local = Path(tmp) / "model"
                mlflow.pyfunc.save_model(
                    str(local),
                    mlflow_model=Model(
                        artifact_path=logged.artifact_location, run_id=run_id, model_uuid=logged.model_id, model_id=logged.model_id
                    ),
                    python_model=str(python_model),
                    artifacts=artifacts,
                    model_config=model_config,
                    signature=signature,
                    pip_requirements=requirements(trainer, self.libraries),
                    metadata={"retrain_plugins": {"retraining": self.spec.name, "libraries": self.libraries, **tags}},
                    # Requirements are given, so nothing is inferred; and the uv project of whatever
                    # folder the process runs in is no property of the model (MLflow would copy its
                    # uv.lock and pyproject.toml into every model): point it at this empty folder.
                    uv_project_path=tmp,
                )
                self.client.log_model_artifacts(logged.model_id, str(local))
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        except BaseException:
            if logged is not None:
                self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id, logged.model_id

    def _register(self, name: str, run_id: str, model_id: str, tags: Mapping[str, str]) -> ModelVersion:
        # The logged model's artifact location, not ``models:/<model_id>``: MLflow 3.17's SQL
        # registry resolves a models:/ source through the process-wide tracking URI, not this client's.
        source = self.client.get_logged_model(model_id).artifact_location
        return self.client.create_model_version(name, source=source, run_id=run_id, tags=dict(tags), model_id=model_id)

    def _sample(self, key: PartitionKey, columns: Sequence[str], rows: int = 50) -> pl.DataFrame | None:
        """The first rows of ``key``'s stored training set (``columns`` only), for a signature."""
        try:
            data = training_sets(self.spec).read_bytes(training_set_rel(key))
        except FileNotFoundError:
            return None
        frame = pl.read_parquet(io.BytesIO(data))
        if any(c not in frame.columns for c in columns):
            return None
        return frame.select(columns).head(rows)

    # -- sub-models ---------------------------------------------------------------------------

    def _lineage(self, key: PartitionKey, entry: Mapping[str, Any]) -> dict[str, str]:
        tags = {
            "retraining": self.spec.name,
            "partition": str(key),
            "window": key.window,
            "cohort": key.cohort,
            "sha256": entry["sha256"],
            "artifact": self.store.storage.uri(entry["path"]),
            "dagster_run_id": entry.get("run_id"),
            "change": entry.get("change"),
            **{k: entry.get(k) for k in LINEAGE},
        }
        return {k: _text(v, _MAX_TAG) for k, v in tags.items() if v is not None}

    def log_sub_model(self, name: str, key: PartitionKey, entry: Mapping[str, Any]) -> ModelVersion:
        """Log ``entry``'s artifact (checksum verified) as a run and register it as a version of ``name``."""
        features = list(entry.get("feature_columns") or [])
        sample = self._sample(key, features)
        trainer = entry.get("trainer") or self.spec.trainer.name
        tags = self._lineage(key, entry)
        params = {
            "trainer": trainer,
            "task": entry.get("task"),
            "strategy": entry.get("strategy"),
            "holdout_fraction": self.spec.trainer.holdout_fraction,
            "lookback": self.spec.windows.lookback,
            "feature_service": entry.get("feature_service"),
            "feature_service_version": entry.get("feature_service_version"),
            "metric": entry.get("metric"),
            **{f"trainer_params.{k}": v for k, v in (entry.get("trainer_params") or {}).items()},
        }
        metrics = {
            k: number
            for k, value in entry.items()
            if (k in METRICS or k.endswith("_holdout")) and (number := _number(value)) is not None
        }
        run_id, model_id = self._log_model(
            run_name=f"{self.spec.name} {key}",
            name="sub_model",
            python_model=MODEL_CODE / "sub_model.py",
            artifacts={MODEL_ARTIFACT: str(self.store.verified_path(dict(entry)))},
            model_config={
                "trainer": trainer,
                "trainer_params": entry.get("trainer_params") or {},
                "task": entry.get("task") or "binary",
                "categorical_features": list(entry.get("categorical_features") or []),
                "feature_columns": features,
            },
            params=params,
            metrics=metrics,
            tags=tags,
            signature=ModelSignature(inputs=_schema_of(sample)) if self.settings.signature and sample is not None and sample.height else None,
            trainer=trainer,
        )
        return self._register(name, run_id, model_id, tags)

    def sync_sub_models(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each entry registered (once) and its partition's alias on it; per partition what that is."""
        if not entries:
            return {}
        name = self.settings.sub_models(self.spec)
        try:
            model = self.registered_model(
                name,
                f"Sub-models of the retraining {self.spec.name!r}: one version per promoted (window, cohort) "
                f"model, tagged partition/window/cohort/sha256; alias {self.settings.alias}-<window>-<cohort> "
                "is the version serving that partition.",
            )
            known = self.versions(name)
            out = {}
            for entry in entries:
                key = PartitionKey(entry["window"], entry["cohort"])
                found = known.get((str(key), entry["sha256"]))
                logged_now = found is None
                if found is None:
                    found = known[(str(key), entry["sha256"])] = self.log_sub_model(name, key, entry)
                alias = self.settings.partition_alias(key)
                if str(model.aliases.get(alias)) != str(found.version):
                    self.client.set_registered_model_alias(name, alias, found.version)
                out[str(key)] = {
                    "mlflow_model": name,
                    "mlflow_version": int(found.version),
                    "mlflow_alias": alias,
                    "mlflow_run_id": found.run_id,
                    "mlflow_logged_now": logged_now,
                }
            return out
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"{self._where()}: sub-models of {self.spec.name} not registered: {exc}") from exc

    # -- the routed bundle ---------------------------------------------------------------------

    def _bundle_signature(self, bundle: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> ModelSignature | None:
        if not self.settings.signature:
            return None
        cohort, features = bundle["cohort_column"], list(bundle["feature_columns"])
        sample = next(
            (s for e in reversed(entries) if (s := self._sample(PartitionKey(e["window"], e["cohort"]), [cohort, *features])) is not None and s.height),
            None,
        )
        if sample is None:
            return None
        inputs = _schema_of(sample.with_columns(pl.col(cohort).cast(pl.String)))
        timestamp = self.spec.labels.timestamp_column
        if timestamp not in (cohort, *features):  # optional: rows routed by time with params
            inputs = Schema([*inputs.inputs, ColSpec(DataType.datetime, timestamp, required=False)])
        if bundle.get("task") == "multiclass":
            kinds = {type(c) for c in bundle.get("classes") or []}
            label = DataType.long if kinds == {int} else DataType.double if kinds <= {int, float} and kinds else DataType.string
            outputs = [ColSpec(label, "prediction"), *(ColSpec(DataType.double, f"proba_{c}") for c in bundle["classes"])]
        else:
            outputs = [ColSpec(DataType.double, "prediction")]
        outputs += [ColSpec(DataType.string, "served_by"), ColSpec(DataType.string, "route")]
        params = ParamSchema([ParamSpec("timestamp_column", DataType.string, "")])
        return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)

    def sync_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """Reconcile the routed sub-models (:meth:`sync_sub_models`), then log and register ``bundle``."""
        entries = [e for routed in bundle["routes"].values() for e in routed]
        synced = self.sync_sub_models(entries)
        out: dict[str, Any] = {
            "mlflow_sub_models": self.settings.sub_models(self.spec),
            "mlflow_sub_models_logged_now": sum(s["mlflow_logged_now"] for s in synced.values()),
        }
        if not self.settings.log_bundle:
            return out
        name = self.settings.bundle_model(self.spec)
        body = json.dumps(bundle, indent=1, sort_keys=True).encode()  # bundle.json's bytes (routing.publish_bundle)
        files = [*entries, *([bundle["fallback"]] if bundle.get("fallback") else [])]
        tags = {
            "retraining": self.spec.name,
            "bundle_sha256": hashlib.sha256(body).hexdigest(),
            "published_at": str(bundle.get("published_at")),
            "task": str(bundle.get("task")),
            "store": self.store.storage.uri(),
        }
        try:
            model = self.registered_model(
                name,
                f"The routed model of the retraining {self.spec.name!r} (retrain_plugins RoutedModel as a pyfunc): "
                f"one version per published bundle; alias {self.settings.alias} is the bundle serving.",
            )
            with tempfile.TemporaryDirectory(prefix="retrain-mlflow-bundle-") as tmp:
                root = Path(tmp) / STORE_ARTIFACT
                root.mkdir()
                (root / BUNDLE).write_bytes(body)
                for entry in files:
                    target = root / entry["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.store.verified_path(dict(entry)), target)
                run_id, model_id = self._log_model(
                    run_name=f"{self.spec.name} bundle",
                    name="routed_model",
                    python_model=MODEL_CODE / "routed.py",
                    artifacts={STORE_ARTIFACT: str(root)},
                    params={"trainer": bundle.get("trainer"), "task": bundle.get("task"), "min_rows": bundle.get("min_rows"),
                            "cohort_column": bundle.get("cohort_column")},
                    metrics={"sub_models": float(len(entries)), "cohorts": float(len(bundle["routes"])),
                             "fallback": float(bool(bundle.get("fallback")))},
                    tags=tags,
                    signature=self._bundle_signature(bundle, entries),
                    trainer=str(bundle.get("trainer")),
                )
            routed = {key: s["mlflow_version"] for key, s in synced.items()}
            self.client.log_dict(run_id, {"sub_model": out["mlflow_sub_models"], "versions": routed}, "routed_versions.json")
            version = self._register(name, run_id, model_id, tags)
            if str(model.aliases.get(self.settings.alias)) != str(version.version):
                self.client.set_registered_model_alias(name, self.settings.alias, version.version)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"{self._where()}: bundle of {self.spec.name} not registered: {exc}") from exc
        return {
            **out,
            "mlflow_bundle_model": name,
            "mlflow_bundle_version": int(version.version),
            "mlflow_bundle_uri": f"models:/{name}@{self.settings.alias}",
            "mlflow_run_id": run_id,
        }
