"""``build_definitions``: everything Dagster needs for one or more retrainings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import Definitions, ExecutorDefinition, in_process_executor

from retrain_plugins.dagster.assets import build_retraining_assets
from retrain_plugins.dagster.resources import retraining_resources
from retrain_plugins.dagster.sensors import build_change_sensor
from retrain_plugins.mlflow import attached
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.feast_registry import RegistryNotApplied
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.trainers import check_trainer_spec


def check_against_registry(spec: RetrainingSpec) -> None:
    """Refuse, while definitions load, a spec whose trainer or Feast feature service does not fit.

    Where the registry does not exist yet (a fresh checkout before ``feast apply``: no registry
    file, or a SQL registry without the repo's project; or a repo still being written), the check
    waits for the sensor and the runs, which make it every time they load the feature service.
    A registry that exists but is out of date (the repo's definitions differ from it) is an error
    here already.
    """
    check_trainer_spec(spec)
    if not (Path(spec.feature_repo) / "feature_store.yaml").exists():
        return
    try:
        load_feature_service_view(spec)
    except RegistryNotApplied:
        pass


def build_definitions(
    specs: RetrainingSpec | Sequence[RetrainingSpec],
    *,
    sensor_interval_seconds: int = 10,
    executor: ExecutorDefinition | None = in_process_executor,
    resources: Mapping[str, Any] | None = None,
) -> Definitions:
    """Assets, change sensor and resources of each retraining.

    Each retraining keeps its own assets, sensor, Feast resource (key ``<name>_feast``), storage
    (its spec's ``store``) and state, so retrainings on different repos and data dirs live side by
    side in one code location. Each spec is checked
    against its Feast feature service first (join keys mapped, no column collisions, supported
    views only): a mismatch is a ``SpecError`` here, not a run that trains on null features.

    Args:
        specs: One retraining spec or several.
        sensor_interval_seconds: Time between two ticks of each change sensor (default 10),
            rounded up to a multiple of the daemon's 5 s loop; Dagster's
            ``minimum_interval_seconds`` is set one second under it, or a 10 s interval would
            tick every 10 or 15 s (see ``sensors.dagster_interval``). Each tick lists the source files
            and reads data only where they changed, so a tick with no change is cheap (<= 0.3 s
            measured at 1,008 partitions) and an edit reaches a run within about this interval.
        executor: The executor of the code location's asset jobs, which is what UI backfills and
            the sensor's runs execute in. Default: Dagster's ``in_process_executor``: a run is one
            process (a retraining run is one training step then the serving steps, in order;
            Dagster's default multiprocess executor starts a process per step, seconds each).
            ``None`` sets none, for a code location that sets its own (``dagster-k8s``'s or
            ``dagster-celery``'s executor on the top-level ``Definitions``): Dagster refuses to
            merge two different executors.
        resources: More resources for the ``Definitions``. An
            :class:`~retrain_plugins.mlflow.MLflowRegistryResource` under ``<name>_mlflow``
            attaches MLflow to that retraining (its training step and ``model_bundle`` then
            require the key); a retraining without one never imports ``mlflow``.
    """
    specs = [specs] if isinstance(specs, RetrainingSpec) else list(specs)
    if not specs:
        raise ValueError("build_definitions needs at least one RetrainingSpec")
    assets, sensors = [], []
    for spec in specs:
        check_against_registry(spec)
        built = build_retraining_assets(spec, mlflow=attached(spec, resources))
        assets.extend(built.all)
        sensors.append(build_change_sensor(spec, built, interval_seconds=sensor_interval_seconds))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"retraining names must be unique in one code location, got {names}")
    own = {key: value for spec in specs for key, value in retraining_resources(spec).items()}
    if clash := sorted(set(own) & set(resources or {})):
        raise ValueError(f"resources {clash} are the retrainings' own (built from their specs): pass other keys")
    return Definitions(assets=assets, sensors=sensors, executor=executor, resources={**own, **(resources or {})})
