"""Feast itself, kept to what retraining needs: one store per repo, apply, locks, working directory.

``import feast`` costs seconds here; everything in this module imports it lazily, and only the
Feast retrieval path, the online store and ``apply`` build a ``FeatureStore``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
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

if TYPE_CHECKING:  # feast is slow to import: only where a store is really built
    from feast import FeatureStore

    from retrain_plugins.spec import RetrainingSpec


def registry_path(feature_repo: Path) -> Path:
    """The registry file named in ``feature_store.yaml`` (relative paths are repo-relative)."""
    config_file = Path(feature_repo) / "feature_store.yaml"
    try:
        st = config_file.stat()
    except FileNotFoundError:
        raise SpecError(f"feature_repo {feature_repo} has no feature_store.yaml") from None
    return _registry_path(config_file, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)  # keyed by the file's size and mtime: an edited yaml is re-read
def _registry_path(config_file: Path, size: int, mtime_ns: int) -> Path:
    feature_repo = config_file.parent
    config = yaml.safe_load(config_file.read_text())
    registry = config.get("registry")
    path = registry.get("path") if isinstance(registry, dict) else registry
    if not path:
        raise SpecError(f"{config_file} names no file registry")
    path = Path(path)
    return path if path.is_absolute() else (Path(feature_repo) / path).resolve()


@contextlib.contextmanager
def quiet_feast() -> Iterator[None]:
    """Silence a deprecation ibis (inside Feast's DuckDB offline store) triggers in DuckDB: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fetch_arrow_table", category=DeprecationWarning)
        yield


@functools.lru_cache(maxsize=8)
def feature_store(feature_repo: str) -> "FeatureStore":
    """One ``FeatureStore`` per repo and process (building it imports feast: seconds)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(feature_repo))


def apply_feature_repo(feature_repo: Path, in_process: bool = False) -> None:
    """``feast apply`` the repo.

    By default this runs the ``feast`` CLI in a subprocess: Feast's own apply imports the repo's
    modules by name (``features``), changes the working directory and deletes objects no longer
    defined, none of which should happen inside a long-lived process. ``in_process=True`` instead
    loads each ``*.py`` of the repo under a unique module name and applies the Feast objects it
    defines through ``FeatureStore.apply`` (adds and updates only): a second or so instead of a new
    interpreter, for tests and tools that apply many short-lived repos.
    """
    if in_process:
        _apply_in_process(Path(feature_repo))
        return
    feast_cli = Path(sys.executable).with_name("feast")
    command = [str(feast_cli), "-c", str(feature_repo), "apply"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SpecError(f"feast apply failed for {feature_repo}:\n{done.stdout}\n{done.stderr}")
    feature_store.cache_clear()


def _apply_in_process(feature_repo: Path) -> None:
    import importlib.util

    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    objects: list = []
    for path in sorted(feature_repo.resolve().glob("*.py")):
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(f"_feast_repo_{digest}_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)) and not any(
                value is o for o in objects
            ):
                objects.append(value)
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
    """Lock of the Feast registry of ``spec``'s repo, across processes.

    Writers (``materialize``) take it exclusively; readers that Feast refuses to serve while a
    feature view is ``MATERIALIZING`` (historical retrieval, online reads) take it shared.
    """
    path = registry_path(spec.feature_repo).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
