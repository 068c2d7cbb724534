"""The Feast registry: up to date by content (not file times), and registries other than a local file.

Every test runs real Feast: in-process applies, the ``feast`` CLI, a SQL registry on SQLite, and a
file registry on S3 served by the session's loopback ``moto_server`` (conftest ``s3``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import yaml
from dagster import DagsterInstance, materialize
from polars.testing import assert_frame_equal

from retrain_plugins import SpecError, apply_feature_repo, asof_training_set, build_definitions, feast_training_set
from retrain_plugins.dagster.execution import materialize_all, retraining_assets, tick
from retrain_plugins.demo.generate import generate
from retrain_plugins.demo.project import copy_feature_repo
from retrain_plugins.feast_import import import_feast
from retrain_plugins.feast_registry import definitions_digest, read_record, registry_location
from retrain_plugins.feast_store import feature_store, quiet_feast, registry_lock, registry_path
from retrain_plugins.feast_view import load_feature_service_view
from retrain_plugins.online import online_frame
from retrain_plugins.partitions import all_partitions, windows

from .conftest import CONFIG, REPO_ROOT
from retrain_plugins.demo.generate import ACTIVITY_FEATURES

from .helpers import make_spec

TTL_7 = "ttl=timedelta(days=7)"
TTL_8 = "ttl=timedelta(days=8)"
FEATURES = list(ACTIVITY_FEATURES)


def _activity_ttl_days(spec, name: str | None = None) -> float:
    spec = spec.model_copy(update={"name": name}) if name else spec
    view = load_feature_service_view(spec)
    (activity,) = [v for v in view.views if v.name == "customer_activity_fv"]
    return activity.ttl_seconds / 86400


def _feast_cli_apply(repo: Path) -> None:
    """A plain ``feast apply``, as a user runs it (not through the library: no record)."""
    feast_cli = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast_cli), "-c", str(repo), "apply"], check=True, capture_output=True, text=True)


def _set_registry(repo: Path, registry) -> None:
    config_file = repo / "feature_store.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["registry"] = registry
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def _new_repo_project(root: Path, registry) -> Path:
    """Copy the demo's Feast repo to ``root`` with another ``registry:``, generate data; no apply."""
    root.mkdir(parents=True)
    repo = copy_feature_repo(REPO_ROOT / "feature_repo", root)
    _set_registry(repo, registry)
    generate(root / "data", CONFIG)
    (root / "data" / "feast").mkdir(parents=True, exist_ok=True)
    return repo


# --- where the registry is -----------------------------------------------------------------------


def test_registry_locations_are_read_from_feature_store_yaml(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text("project: p\nregistry: ../data/registry.db\n")
    here = registry_location(repo)
    assert (here.registry_type, here.local_path) == ("file", tmp_path / "data" / "registry.db")
    assert registry_path(repo) == tmp_path / "data" / "registry.db"

    monkeypatch.setenv("REGISTRY_DIR", str(tmp_path / "elsewhere"))
    (repo / "feature_store.yaml").write_text("project: p\nregistry: ${REGISTRY_DIR}/registry.db\n")
    assert registry_location(repo).local_path == tmp_path / "elsewhere" / "registry.db"  # Feast expands ${VAR}

    for url in ("s3://bucket/feast/registry.pb", "gs://bucket/registry.pb"):
        _set_registry(repo, {"path": url, "cache_ttl_seconds": 60})
        remote = registry_location(repo)
        assert (remote.registry_type, remote.url, remote.local_path, remote.record_path) == ("file", url, None, None)
        with pytest.raises(SpecError, match=r"registry of .* \(" + url + r"\) is not a local file"):
            registry_path(repo)

    _set_registry(repo, {"registry_type": "sql", "path": "sqlite:///../data/registry.db"})
    sql = registry_location(repo)
    assert (sql.registry_type, sql.local_path, sql.rewritten) == ("sql", tmp_path / "data" / "registry.db", True)
    assert sql.url == f"sqlite:///{tmp_path / 'data' / 'registry.db'}"  # against the repo, as `feast apply` reads it
    _set_registry(repo, {"registry_type": "sql", "path": f"sqlite:///{tmp_path}/abs.db"})
    assert (registry_location(repo).local_path, registry_location(repo).rewritten) == (tmp_path / "abs.db", False)
    _set_registry(repo, {"registry_type": "sql", "path": "sqlite://"})
    assert registry_location(repo).local_path is None  # in memory

    _set_registry(repo, {"registry_type": "sql", "path": "postgresql+psycopg2://feast:s3cret@db.internal:5432/feast"})
    pg = registry_location(repo)
    assert pg.local_path is None
    assert pg.display == "postgresql+psycopg2://feast:***@db.internal:5432/feast"
    assert "s3cret" not in pg.key

    (repo / "feature_store.yaml").write_text("project: p\n")
    with pytest.raises(SpecError, match="names no registry"):
        registry_location(repo)


def test_only_a_local_registry_file_is_locked_and_nothing_host_local_is_made_for_others(tmp_path):
    """Feast rewrites a local registry file in place: readers and materialize lock it, beside it.
    A SQL registry (transactions) or one on an object store (atomic objects) takes no lock at
    all: no lock file in the retraining's folder that only one host would see."""
    root = tmp_path / "project"
    repo = copy_feature_repo(REPO_ROOT / "feature_repo", root)
    spec = make_spec(root)
    with registry_lock(spec, shared=True):
        pass
    assert registry_location(repo).local_path.with_suffix(".lock").exists()
    for registry in (
        {"registry_type": "sql", "path": "postgresql+psycopg2://u:pw@127.0.0.1:1/feast"},
        {"registry_type": "sql", "path": "sqlite:///../data/feast/registry_sql.db"},
        "s3://bucket/registry.pb",
    ):
        _set_registry(repo, registry)
        before = sorted(str(p) for p in root.rglob("*"))
        with registry_lock(spec), registry_lock(spec, shared=True):
            pass
        assert sorted(str(p) for p in root.rglob("*")) == before, registry


def test_retrieval_serves_a_view_left_materializing(project):
    """Feast marks views MATERIALIZING while it materializes and refuses to serve them, historical
    retrieval included; another host's materialize (no lock spans hosts) or one killed half-way
    (the view stays so until the next) would stop every training run. The library's store sets
    ``serve_features_while_materializing``: the training set is the same."""
    from feast.feature_view import FeatureViewState

    feast = import_feast()  # not at the top: the suite's process imports Feast as the library does
    spec, view = project.spec, load_feature_service_view(project.spec)
    window = windows(spec)[1:2]
    before = feast_training_set(spec, view, window, "north")
    plain = feast.FeatureStore(repo_path=str(spec.feature_repo))  # what another process sees
    for fv in plain.list_feature_views():
        fv.state = FeatureViewState.MATERIALIZING
        plain.registry.apply_feature_view(fv, plain.project, commit=True)
    entity_df = pd.DataFrame({"customer_id": [1], "event_timestamp": [datetime(2025, 3, 1, tzinfo=timezone.utc)]})
    with pytest.raises(ValueError, match="MATERIALIZING.*cannot serve features"):
        feast.FeatureStore(repo_path=str(spec.feature_repo)).get_historical_features(
            entity_df=entity_df, features=plain.get_feature_service(spec.feature_service)
        )
    feature_store.cache_clear()  # a fresh process of the library
    assert_frame_equal(feast_training_set(spec, view, window, "north"), before)


# --- the definitions digest ----------------------------------------------------------------------


def test_the_digest_follows_content_and_feasts_file_rules(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "__pycache__").mkdir()
    (repo / "feature_store.yaml").write_text("project: p\nregistry: registry.db\n")
    (repo / "features.py").write_text("X = 1\n")
    (repo / "sub" / "more.py").write_text("Y = 2\n")
    (repo / "__pycache__" / "junk.py").write_text("Z = 3\n")
    (repo / "scratch.py").write_text("W = 4\n")
    (repo / ".feastignore").write_text("scratch.py  # not definitions\n")
    first = definitions_digest(repo)
    assert sorted(first.files) == [".feastignore", "feature_store.yaml", "features.py", "sub/more.py"]

    # touched (new mtime and ctime), or rewritten with the same bytes under a new inode: same digest
    os.utime(repo / "features.py", ns=(time.time_ns() + 10**12, time.time_ns() + 10**12))
    (repo / "sub" / ".more.tmp").write_bytes((repo / "sub" / "more.py").read_bytes())
    (repo / "sub" / ".more.tmp").replace(repo / "sub" / "more.py")
    (repo / "scratch.py").write_text("W = 5\n")  # ignored by .feastignore, as Feast ignores it
    assert definitions_digest(repo) == first

    stat = (repo / "features.py").stat()
    (repo / "features.py").write_text("X = 2\n")  # same size; mtime restored, as `cp -p` would
    os.utime(repo / "features.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = definitions_digest(repo)
    assert edited.digest != first.digest
    assert [n for n in first.files if first.files[n] != edited.files[n]] == ["features.py"]

    moved = tmp_path / "moved"
    shutil.copytree(repo, moved)  # the same files elsewhere: definitions may compute paths from there
    assert definitions_digest(moved).files == edited.files
    assert definitions_digest(moved).digest != edited.digest


# --- file registry: touched, edited, applied by plain `feast apply` ------------------------------


def test_touched_but_identical_definitions_keep_the_registry_current(materialized):
    """What a fresh checkout or an image build does: every definition file gets new times (and
    inodes); the sensor, the definitions and the assets keep working and nothing is re-read."""
    spec = materialized.spec
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    cache = spec.data_dir / "state" / spec.name / "feature_service_view.json"
    cached = cache.stat().st_mtime_ns
    future = time.time_ns() + 3600 * 10**9
    for name in ("features.py", "feature_store.yaml"):
        path = spec.feature_repo / name
        copy = path.with_name(f".{name}.checkout")
        copy.write_bytes(path.read_bytes())
        copy.replace(path)  # a new inode, as git checkout writes files
        os.utime(path, ns=(future, future))  # newer than the registry

    defs = build_definitions(spec)  # checks the spec against the registry
    assert tick(defs, materialized.sensor, materialized.instance).run_requests == []
    bundle = retraining_assets(defs, spec, "model_bundle")
    assert materialize(bundle, instance=materialized.instance, resources=defs.resources).success
    assert cache.stat().st_mtime_ns == cached  # the view came from its cache: no Feast call
    assert _activity_ttl_days(spec) == 7


def test_an_edited_definition_is_named_until_the_repo_is_applied(materialized):
    spec = materialized.spec
    features = spec.feature_repo / "features.py"
    original = features.read_text()
    features.write_text(original.replace(TTL_7, TTL_8))
    expected = (
        r"Feast registry .*registry\.db is out of date: \['features.py'\] changed after the last apply, "
        r"the registry differs from the repo's definitions: feature view 'customer_activity_fv' differs \(ttl\); "
        r"run `feast -c .*feature_repo apply`"
    )
    with pytest.raises(SpecError, match=expected):
        load_feature_service_view(spec)
    with pytest.raises(SpecError, match=expected):
        build_definitions(spec)
    with pytest.raises(SpecError, match=expected):  # the sensor says it too, before recording anything
        tick(materialized.defs, materialized.sensor, materialized.instance)

    apply_feature_repo(spec.feature_repo, in_process=True)
    assert _activity_ttl_days(spec) == 8
    assert read_record(registry_location(spec.feature_repo))["recorded_by"] == "apply"

    # a comment is a change of the file, not of the definitions: compared by content, accepted
    features.write_text(features.read_text() + "\n# reviewed\n")
    assert _activity_ttl_days(spec) == 8
    record = read_record(registry_location(spec.feature_repo))
    assert (record["recorded_by"], record["digest"]) == ("content", definitions_digest(spec.feature_repo).digest)


def test_a_registry_applied_by_plain_feast_apply_is_compared_by_content(project):
    spec, repo = project.spec, project.spec.feature_repo
    location = registry_location(repo)
    location.record_path.unlink()  # as if the registry had been applied by `feast apply`
    assert _activity_ttl_days(spec, "no_record") == 7  # compared by content: equal
    assert read_record(location)["recorded_by"] == "content"

    features = repo / "features.py"
    original = features.read_text()
    features.write_text(original.replace(TTL_7, TTL_8))
    _feast_cli_apply(repo)  # the registry now holds 8 days; the library's record still names 7
    features.write_text(original)  # back to the recorded files, the registry does not follow
    with pytest.raises(
        SpecError,
        match=r"is out of date: the registry differs from the repo's definitions: "
        r"feature view 'customer_activity_fv' differs \(ttl\)",
    ):
        load_feature_service_view(spec)
    features.write_text(original.replace(TTL_7, TTL_8))  # what `feast apply` applied: current
    assert _activity_ttl_days(spec) == 8
    assert _activity_ttl_days(spec, "other") == 8


def test_a_missing_registry_still_says_to_apply(project):
    registry_path(project.spec.feature_repo).unlink()
    with pytest.raises(SpecError, match=r"registry .*registry\.db does not exist: run `feast -c .* apply`"):
        load_feature_service_view(project.spec.model_copy(update={"name": "fresh"}))
    build_definitions(project.spec)  # definitions load before the first apply; the sensor checks later


# --- SQL registry on SQLite -----------------------------------------------------------------------


def test_a_sql_registry_on_sqlite_serves_training_sets_the_online_store_and_the_checks(tmp_path, monkeypatch):
    root = tmp_path / "sql"
    repo = _new_repo_project(
        root, {"registry_type": "sql", "path": "sqlite:///../data/feast/registry_sql.db", "cache_ttl_seconds": 60}
    )
    spec = make_spec(root)
    assert spec.retrieval == "feast"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative SQLite URL means the repo's, from any directory

    build_definitions(spec)  # before the first apply: loads (no registry database yet)
    apply_feature_repo(spec.feature_repo)  # the real `feast apply` CLI, run from the repo folder
    database = root / "data" / "feast" / "registry_sql.db"
    assert registry_location(repo).local_path == database and database.exists()
    view = load_feature_service_view(spec)
    assert view.feature_columns[: len(FEATURES)] == FEATURES
    assert not list(elsewhere.rglob("*"))  # nothing opened against the working directory

    window = windows(spec)[1:2]
    via_feast = feast_training_set(spec, view, window, "north")
    via_asof = asof_training_set(spec, view, window, ["north"])
    assert via_feast.height == via_asof.height > 20
    assert_frame_equal(via_feast, via_asof.select(via_feast.columns), check_dtypes=False)

    instance = DagsterInstance.ephemeral()
    defs = build_definitions(spec)
    assert materialize_all(defs, spec, instance).success  # training sets, sub-models, online store
    assert len(list((spec.data_dir / "models" / spec.name / "entries").rglob("*.json"))) == len(all_partitions(spec))
    store = feature_store(str(spec.feature_repo))
    entities = sorted(pl.read_parquet(root / "data/sources/labels/*/*.parquet")["customer_id"].unique())[:8]
    online = online_frame(spec, store, entities).sort("customer_id").select("customer_id", *view.feature_columns)
    end = datetime(2025, 3, 31, 23, 59, tzinfo=timezone.utc)
    entity_df = pd.DataFrame({"customer_id": entities, "event_timestamp": [end] * len(entities)})
    service = store.get_feature_service(spec.feature_service)
    with quiet_feast():
        offline = pl.from_arrow(store.get_historical_features(entity_df=entity_df, features=service).to_arrow())
    assert_frame_equal(online, offline.sort("customer_id").select(online.columns), check_dtypes=False)
    assert online.null_count().sum_horizontal().item() == 0

    features = repo / "features.py"
    features.touch()
    assert tick(defs, f"{spec.name}_change_sensor", instance).run_requests == []
    features.write_text(features.read_text().replace(TTL_7, TTL_8))
    with pytest.raises(SpecError, match=r"registry_sql\.db is out of date: \['features.py'\] changed.*differs \(ttl\)"):
        load_feature_service_view(spec)
    registry_location(repo).record_path.unlink()  # and without the library's record (plain `feast apply`)
    with pytest.raises(SpecError, match=r"is out of date: the registry differs .*'customer_activity_fv' differs \(ttl\)"):
        load_feature_service_view(spec)
    apply_feature_repo(spec.feature_repo, in_process=True)
    assert _activity_ttl_days(spec) == 8


# --- file registry on S3 (the session's moto_server on loopback, tests/s3server.py) ---------------


def test_a_file_registry_on_s3_is_checked_by_content_and_cached_per_retraining(tmp_path, s3):
    """Feast's S3 registry store on the session's moto_server (its boto3 client finds the server
    through ``AWS_ENDPOINT_URL_S3``, set by the ``s3`` fixture; ``FEAST_S3_ENDPOINT_URL`` also works)."""
    root = tmp_path / "s3"
    url = f"s3://{s3.bucket}/churn/registry.pb"
    repo = _new_repo_project(root, {"path": url, "cache_ttl_seconds": 60})
    spec = make_spec(root)
    build_definitions(spec)  # before the first apply: the registry object does not exist yet
    apply_feature_repo(spec.feature_repo, in_process=True)
    listed = s3.client.list_objects_v2(Bucket=s3.bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["churn/registry.pb"]
    assert registry_location(repo).record_path is None  # nothing local beside it

    view = load_feature_service_view(spec)  # no record: compared by content, then cached
    cache = spec.data_dir / "state" / spec.name / "feature_service_view.json"
    assert json.loads(cache.read_text())["registry"] == url
    cached = cache.stat().st_mtime_ns
    (repo / "features.py").touch()
    assert load_feature_service_view(spec) == view
    assert cache.stat().st_mtime_ns == cached  # the digest is unchanged: no Feast call
    window = windows(spec)[1:2]
    via_feast = feast_training_set(spec, view, window, "south")
    assert_frame_equal(via_feast, asof_training_set(spec, view, window, ["south"]).select(via_feast.columns), check_dtypes=False)

    features = repo / "features.py"
    features.write_text(features.read_text().replace(TTL_7, TTL_8))
    with pytest.raises(SpecError, match=rf"registry {url} is out of date: .*differs \(ttl\)"):
        load_feature_service_view(spec)
    apply_feature_repo(spec.feature_repo, in_process=True)
    assert _activity_ttl_days(spec) == 8
