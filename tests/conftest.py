"""Shared fixtures: small real projects (Feast repo + generated data + applied registry).

Building a project is: copy ``feature_repo/`` next to a fresh ``data/``, generate the seeded demo
data at test size, ``feast apply`` (in-process), and optionally materialize every partition
through Dagster. A materialized template is built once per session (per set of spec overrides) and
copied per test; the copy is re-applied so its Feast sources point at its own data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from dagster import DagsterInstance

from retrain_plugins import RetrainingSpec
from retrain_plugins.dagster.execution import materialize_all
from retrain_plugins.demo.generate import DemoConfig, generate
from retrain_plugins.demo.project import DemoProject, copy_feature_repo, open_project
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.store import ModelStore

from .helpers import make_spec
from .postgres import PostgresError, PostgresServer, start_postgres

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = DemoConfig(n_customers=60, months=3)


class Project(DemoProject):
    """A test project (see :class:`retrain_plugins.demo.project.DemoProject`) on an ephemeral instance."""

    def artifact_digests(self) -> dict[PartitionKey, tuple[str, str, int]]:
        """(path, sha256 of the bytes on disk, mtime_ns) of every current sub-model file."""
        store = ModelStore(model_store_root(self.spec))
        out = {}
        for key, entry in store.entries().items():
            path = store.path_of(entry)
            out[key] = (entry["path"], hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        return out


def _open(root: Path, spec: RetrainingSpec) -> Project:
    return Project(*open_project(root, spec, DagsterInstance.ephemeral()))


def new_project(root: Path, config: DemoConfig | None = CONFIG, **spec_overrides) -> Project:
    """Copy the Feast repo to ``root``, generate data (unless ``config`` is None), apply."""
    root.mkdir(parents=True, exist_ok=True)
    copy_feature_repo(REPO_ROOT / "feature_repo", root)
    if config is not None:
        generate(root / "data", config)
    return _open(root, make_spec(root, **spec_overrides))


@pytest.fixture(scope="session")
def materialized_templates(tmp_path_factory):
    """``materialized_templates(**spec_overrides)``: the folder of a project built with those overrides
    and fully materialized, once per session per set of overrides. Never changed: tests copy it."""
    built: dict[str, Path] = {}

    def template(**overrides) -> Path:
        key = json.dumps(overrides, sort_keys=True)
        if key not in built:
            project = new_project(tmp_path_factory.mktemp("template") / "project", **overrides)
            assert materialize_all(project.defs, project.spec, project.instance).success
            built[key] = project.root
        return built[key]

    return template


@pytest.fixture
def project(tmp_path) -> Project:
    """A fresh project with data and an applied registry, nothing materialized."""
    return new_project(tmp_path / "project")


@pytest.fixture
def materialized_copy(materialized_templates, tmp_path):
    """``materialized_copy(name, **spec_overrides)``: a copy (``tmp_path / name``) of the session's
    fully materialized project with those overrides, re-applied, on a fresh Dagster instance."""

    def copy(name: str = "custom", **overrides) -> Project:
        root = tmp_path / name
        shutil.copytree(materialized_templates(**overrides), root)
        return _open(root, make_spec(root, **overrides))

    return copy


@pytest.fixture
def materialized(materialized_copy) -> Project:
    """A copy of the session's fully materialized project, on a fresh Dagster instance."""
    return materialized_copy("project")


@pytest.fixture
def make_project(tmp_path):
    """Build a project with spec overrides, e.g. ``make_project(windows={"lookback": 2})``."""

    def make(name: str = "custom", config: DemoConfig = CONFIG, **overrides) -> Project:
        return new_project(tmp_path / name, config, **overrides)

    return make


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """``moto_server`` on a free loopback port for the session (tests/s3server.py); fails if it cannot start."""
    from .s3server import start

    try:
        server = start(tmp_path_factory.mktemp("moto"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


class S3Bucket(NamedTuple):
    endpoint: str
    bucket: str
    client: object  # a boto3 S3 client on the server

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """A fresh bucket on the session's moto server, and this test's environment pointed at it.

    The fake credentials and ``AWS_ENDPOINT_URL_S3`` are set for this test only (monkeypatch); fsspec's
    cached S3 filesystems are dropped before and after, so none outlives the environment it was built in.
    """
    import re

    import s3fs

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    client = s3_server.client()
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{len(client.list_buckets()['Buckets'])}"
    client.create_bucket(Bucket=bucket)
    yield S3Bucket(s3_server.endpoint, bucket, client)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 on loopback for the session, started on first use (``tests/postgres.py``).

    Tests create their own database in it (``postgres.create_database(name)``). A server that
    cannot start fails the test that asked for it, with the reason; it never skips.
    """
    try:
        server = start_postgres()
    except PostgresError as exc:
        pytest.fail(f"could not start PostgreSQL for the test: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
