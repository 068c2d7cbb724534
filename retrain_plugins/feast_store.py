"""Feast itself, kept to what retraining needs: one store per repo, apply, locks, working directory.

``import feast`` costs seconds here; everything in this module imports it lazily, and only the
Feast retrieval path, the online store and ``apply`` build a ``FeatureStore``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from retrain_plugins.errors import SpecError
from retrain_plugins.feast_import import import_feast
from retrain_plugins.feast_registry import config_text, definitions_digest, registry_location, write_record
from retrain_plugins.feast_registry_diff import load_repo_objects

if TYPE_CHECKING:  # feast is slow to import: only where a store is really built
    from feast import FeatureStore

    from retrain_plugins.spec import RetrainingSpec


def registry_path(feature_repo: Path) -> Path:
    """The local file holding the registry named in ``feature_store.yaml`` (relative: repo-relative).

    That is the registry file of a file registry on local disk, or the database file of a SQLite
    SQL registry. A registry with no local file (``s3://``, ``gs://``, a SQL server) raises
    ``SpecError``: use :func:`retrain_plugins.feast_registry.registry_location` for any registry.
    """
    location = registry_location(feature_repo)
    if location.local_path is None:
        raise SpecError(f"the Feast registry of {feature_repo} ({location.display}) is not a local file")
    return location.local_path


@contextlib.contextmanager
def quiet_feast() -> Iterator[None]:
    """Silence a deprecation ibis (inside Feast's DuckDB offline store) triggers in DuckDB: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)
        yield


@functools.lru_cache(maxsize=8)
def feature_store(feature_repo: str) -> "FeatureStore":
    """One ``FeatureStore`` per repo and process (building it imports feast: seconds), on the
    repo's ``feature_store.yaml`` with two changes: a relative SQLite registry URL made absolute
    and ``serve_features_while_materializing`` set."""
    FeatureStore = import_feast().FeatureStore

    location = registry_location(Path(feature_repo))
    from feast.repo_config import RepoConfig

    raw = yaml.safe_load(config_text(Path(feature_repo)))
    registry = raw["registry"] if isinstance(raw["registry"], dict) else {"path": raw["registry"]}
    # A relative SQLite URL of a SQL registry: Feast hands it to SQLAlchemy as it is, which reads it
    # against the working directory (`feast apply` runs from the repo). Made absolute against the
    # repo, every process opens the database `feast apply` wrote, wherever it was started.
    # Feast's materialize marks its views MATERIALIZING in the registry until it ends, and
    # retrieval refuses such a view (historical retrieval too: "cannot serve features") unless
    # this is set. Offline retrieval never reads what materialize writes, and online reads get the
    # last values loaded: set, a materialization on another host (no lock spans hosts) or one
    # killed half-way (its views stay MATERIALIZING until the next) stops no training run.
    raw["registry"] = {**registry, "path": location.url, "serve_features_while_materializing": True}
    _quiet_registry_advice()
    config = RepoConfig(**raw)
    config.repo_path = Path(feature_repo)
    return FeatureStore(repo_path=str(feature_repo), config=config)


class _RegistryAdvice(logging.Filter):
    """Drops Feast's advice that ``serve_features_while_materializing`` "typically has no effect"
    on a file registry: it does (a file registry's views are marked MATERIALIZING too), and Feast
    repeats it at every read of ``RepoConfig.registry``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "serve_features_while_materializing` is enabled but" not in record.getMessage()


def _quiet_registry_advice() -> None:
    logger = logging.getLogger("feast.repo_config")
    if not any(isinstance(f, _RegistryAdvice) for f in logger.filters):
        logger.addFilter(_RegistryAdvice())


def apply_feature_repo(feature_repo: Path, in_process: bool = False) -> None:
    """``feast apply`` the repo, and record the digest of the definitions applied.

    By default this runs the ``feast`` CLI in a subprocess: Feast's own apply imports the repo's
    modules by name (``features``), changes the working directory and deletes objects no longer
    defined, none of which should happen inside a long-lived process. ``in_process=True`` instead
    loads each definition file of the repo under a unique module name and applies the Feast objects
    it defines through ``FeatureStore.apply`` (adds and updates only): a second or so instead of a
    new interpreter, for tests and tools that apply many short-lived repos.

    The digest (:func:`retrain_plugins.feast_registry.definitions_digest`) is taken before the
    apply and recorded after it succeeds, beside a registry that is a local file, so loading the
    feature service later needs no comparison with the registry (see
    :func:`retrain_plugins.feast_registry_diff.check_registry_current`).
    """
    feature_repo = Path(feature_repo)
    digest = definitions_digest(feature_repo)
    if in_process:
        _apply_in_process(feature_repo)
    else:
        feast_cli = Path(sys.executable).with_name("feast")
        command = [str(feast_cli), "-c", str(feature_repo), "apply"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SpecError(f"feast apply failed for {feature_repo}:\n{done.stdout}\n{done.stderr}")
        feature_store.cache_clear()
    write_record(registry_location(feature_repo), digest, "apply")


def _apply_in_process(feature_repo: Path) -> None:
    objects = load_repo_objects(feature_repo)
    feature_store.cache_clear()
    feature_store(str(feature_repo.resolve())).apply(objects)


def resolve_source_path(repo_path: Path | str, path: str) -> str:
    """A FileSource path as Feast resolves it: remote URIs as they are, relative paths against the repo.

    (``FileSource.get_uri_for_file_path``; Feast's DuckDB store itself reads the raw path against the
    working directory, which :func:`feast_calls` works around.)
    """
    if "://" in path or Path(path).is_absolute():
        return path
    return str(Path(repo_path) / path)


_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def feast_calls(spec: RetrainingSpec) -> Iterator[None]:
    """Run Feast retrieval or materialization so relative FileSource paths mean the same as for us.

    Feast 0.67 resolves a relative ``FileSource`` path against the repo when it validates or
    describes a source, but its DuckDB offline store reads the raw path against the working
    directory, so a run started elsewhere finds no files. With a relative source in the repo, Feast
    is called from the repo folder (process-wide, so under a lock); otherwise nothing changes.
    """
    with quiet_feast():
        if not _has_relative_sources(spec.feature_repo):
            yield
            return
        with _CWD_LOCK:
            before = os.getcwd()
            os.chdir(spec.feature_repo)
            try:
                yield
            finally:
                os.chdir(before)


def _has_relative_sources(feature_repo: Path) -> bool:
    for view in feature_store(str(feature_repo)).list_feature_views():
        path = str(getattr(view.batch_source, "path", "") or "")
        if path and "://" not in path and not Path(path).is_absolute():
            return True
    return False


@contextlib.contextmanager
def registry_lock(spec: RetrainingSpec, shared: bool = False) -> Iterator[None]:
    """Lock of a local file registry of ``spec``'s repo, across processes of this host.

    Feast rewrites a local registry file in place (truncate, then write), so writers
    (``materialize``) take it exclusively and readers (historical retrieval, online reads) shared.
    Any other registry takes no lock (``RegistryLocation.rewritten_in_place``): a SQL registry
    commits in transactions, an object store replaces the object atomically, retrieval serves
    views another host is materializing (:func:`feature_store` sets Feast's
    ``serve_features_while_materializing``), and materializations are one at a time across
    hosts through the ``feast_materialize`` pool (docs/deployment.md).
    """
    location = registry_location(spec.feature_repo)
    if not location.rewritten_in_place:
        yield
        return
    path = location.local_path.with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
