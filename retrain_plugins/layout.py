"""Where a retraining keeps what it writes.

Sub-models, training sets, the fallback and the bundle live on the retraining's storage
(``store.url``, default ``data_dir``: see :mod:`retrain_plugins.storage`); every reader and writer
gets them from here, so there is one answer to "where are this retraining's models". The change
sensor's state is the sensor's own and stays on the host that evaluates it
(``<data_dir>/state/<name>/``).
"""

from __future__ import annotations

from pathlib import Path

from retrain_plugins.partitions import PartitionKey, path_segment
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.storage import Storage
from retrain_plugins.store import ModelStore


def storage(spec: RetrainingSpec) -> Storage:
    """The root of ``spec``'s storage (``store.url`` or ``data_dir``)."""
    return Storage(spec.store.url or spec.data_dir, spec.store.options)


def model_store(spec: RetrainingSpec) -> ModelStore:
    """``spec``'s model store: ``<storage>/models/<name>``."""
    return ModelStore(storage(spec).child(f"models/{spec.name}"), keep_versions=spec.store.keep_versions)


def training_sets(spec: RetrainingSpec) -> Storage:
    """Where ``spec``'s training sets live: ``<storage>/training_sets/<name>``."""
    return storage(spec).child(f"training_sets/{spec.name}")


FAILED = ".failed"  # beside a training set: the fingerprint its partition's training failed on


def training_set_rel(key: PartitionKey, suffix: str = ".parquet") -> str:
    """``key``'s training set (``.parquet``), its metadata (``.json``) or failure marker
    (:data:`FAILED`) below :func:`training_sets`."""
    return f"{path_segment(key.window)}/{path_segment(key.cohort)}{suffix}"


def model_store_root(spec: RetrainingSpec) -> Path:
    """The model store's local folder (a local storage only)."""
    return model_store(spec).root


def training_set_path(spec: RetrainingSpec, key: PartitionKey) -> Path:
    """``key``'s training-set file (a local storage only)."""
    return training_sets(spec).local_path(training_set_rel(key))


def state_path(spec: RetrainingSpec) -> Path:
    """The change sensor's state (on the host that evaluates the sensor)."""
    return Path(spec.data_dir) / "state" / spec.name / "state.sqlite"
