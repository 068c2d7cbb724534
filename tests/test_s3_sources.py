"""Label and feature sources on S3 (a real moto server on loopback), read offline through fsspec.

The demo project's sources are uploaded to ``s3://<bucket>/sources/...`` and the Feast repo and
the spec point at them; the model store, training sets and state stay local. Every assertion is
also made against the same computation on local copies of the same files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, materialize
from polars.testing import assert_frame_equal

from retrain_plugins import build_definitions, load_feature_service_view, state_store
from retrain_plugins.changes.fingerprints import frame_cells
from retrain_plugins.changes.scan import scan_files
from retrain_plugins.dagster.execution import execute, retraining_assets, tick
from retrain_plugins.dagster.tags import REASONS_TAG
from retrain_plugins.demo.generate import DemoConfig, generate
from retrain_plugins.demo.project import copy_feature_repo, open_project
from retrain_plugins.errors import DataError, SpecError
from retrain_plugins.online import materialize_online
from retrain_plugins.partitions import PartitionKey, training_windows, windows
from retrain_plugins.layout import training_set_rel, training_sets
from retrain_plugins.remote_reads import content_md5
from retrain_plugins.sources import file_stats, sources, validate_sources
from retrain_plugins.sql import connect, parquet
from retrain_plugins.asof_join import asof_training_set
from retrain_plugins.labels import label_rows
from retrain_plugins.training_sets import partition_training_set
from retrain_plugins.validation import check_label_source

from .conftest import CONFIG, REPO_ROOT, Project, S3Bucket
from .helpers import make_spec

LABELS_FEB = "sources/labels/month=2025-02/part-0.parquet"
SOURCE_LINES = {
    'path=str(SOURCES / "activity" / "*" / "*.parquet"),': "activity",
    'path=str(SOURCES / "profile" / "*" / "*.parquet"),': "profile",
}


def upload(s3: S3Bucket, local: Path, key: str) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=local.read_bytes())


def upload_sources(s3: S3Bucket, data: Path) -> list[str]:
    """Upload every parquet file under ``data/sources`` to the same key in the bucket."""
    keys = []
    for path in sorted((data / "sources").rglob("*.parquet")):
        key = path.relative_to(data).as_posix()
        upload(s3, path, key)
        keys.append(key)
    return keys


def point_repo_at(feature_repo: Path, prefix: str) -> None:
    """Rewrite the copied demo repo's FileSource paths to ``<prefix>/<source>/*/*.parquet``."""
    features = feature_repo / "features.py"
    text = features.read_text()
    for line, source in SOURCE_LINES.items():
        assert text.count(line) == 1, f"demo repo changed: {line!r} not found once in {features}"
        text = text.replace(line, f'path="{prefix}/{source}/*/*.parquet",')
    features.write_text(text)


def s3_project(root: Path, s3: S3Bucket, config: DemoConfig = CONFIG, **overrides) -> Project:
    """A demo project whose label and feature sources live only in ``s3``.

    The data is generated under ``root/data``, uploaded, and moved aside to ``root/local/sources``
    (the local copy every S3 result is compared with), so that nothing reads it by accident.
    """
    root.mkdir(parents=True)
    copy_feature_repo(REPO_ROOT / "feature_repo", root)
    generate(root / "data", config)
    upload_sources(s3, root / "data")
    (root / "local").mkdir()
    shutil.move(root / "data" / "sources", root / "local" / "sources")
    point_repo_at(root / "feature_repo", s3.url("sources").rstrip("/"))
    spec = make_spec(root, **{"retrieval": "duckdb_asof", "labels": {"path": s3.url("sources/labels/*/*.parquet")}, **overrides})
    return Project(*open_project(root, spec, DagsterInstance.ephemeral()))


def local_twin(project: Project) -> tuple:
    """The same retraining read from the local copies of the sources (``root/local/sources``):
    (spec, feature service view) whose label glob and feature source paths are local."""
    local = project.root / "local" / "sources"
    spec = project.spec.model_copy(update={"labels": project.spec.labels.model_copy(update={"path": str(local / "labels/*/*.parquet")})})
    view = load_feature_service_view(project.spec)
    prefix = view.views[0].source_path.split("/sources/")[0] + "/sources/"
    local_view = dataclasses.replace(
        view, views=tuple(dataclasses.replace(fv, source_path=str(local) + "/" + fv.source_path[len(prefix):]) for fv in view.views)
    )
    return spec, local_view


def _etag(s3: S3Bucket, key: str) -> str:
    return s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"].strip('"')


def _loaded_extensions() -> set[str]:
    return {name for name, in connect().execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}


@pytest.fixture
def s3_sources(s3, tmp_path) -> Project:
    return s3_project(tmp_path / "project", s3)


def test_sources_on_s3_list_with_etags_and_read_like_their_local_copies(s3, s3_sources):
    project = s3_sources
    spec, view = project.spec, load_feature_service_view(project.spec)
    local_spec, local_view = local_twin(project)
    assert all(fv.source_path.startswith(f"s3://{s3.bucket}/sources/") for fv in view.views)
    assert spec.label_glob == f"s3://{s3.bucket}/sources/labels/*/*.parquet"

    # Listing through fsspec: every uploaded object, by full URL, with its ETag as the change token.
    listed = {name: file_stats(source.pattern) for name, source in sources(spec, view).items()}
    local = project.root / "local"
    keys = sorted(p.relative_to(local).as_posix() for p in (local / "sources").rglob("*.parquet"))
    assert sorted(url for stats in listed.values() for url in stats) == [s3.url(k) for k in keys]
    for stats in listed.values():
        for url, stat in stats.items():
            key = url.removeprefix(f"s3://{s3.bucket}/")
            assert stat.token == f"s3-etag:{_etag(s3, key)}"
            assert stat.size == (local / key).stat().st_size
            assert (stat.ctime_ns, stat.inode) == (None, None)

    # The change scan lists them all and records each object's ETag.
    state = state_store(spec)
    scan = scan_files(spec, view, state, windows(spec))
    assert scan.seen == len(keys) and scan.unreadable == {}
    assert {path: s.token for (_, path), s in scan.pending.items()} == {
        url: stat.token for stats in listed.values() for url, stat in stats.items()
    }
    assert scan.reached == {w.key for w in windows(spec)}

    # Reads: DuckDB globs s3:// through the registered fsspec filesystem, no extension loaded.
    glob_count = connect(spec.label_glob).execute(f"SELECT count(*) FROM {parquet('p')}", {"p": spec.label_glob}).fetchone()
    assert glob_count == connect().execute(f"SELECT count(*) FROM {parquet('p')}", {"p": local_spec.label_glob}).fetchone()
    assert "httpfs" not in _loaded_extensions()
    all_windows = windows(spec)
    assert_frame_equal(label_rows(spec, all_windows, None), label_rows(local_spec, all_windows, None))
    on_s3 = asof_training_set(spec, view, all_windows, None)
    assert on_s3.height > 0 and on_s3["sessions_7d"].null_count() < on_s3.height
    assert_frame_equal(on_s3, asof_training_set(local_spec, local_view, all_windows, None))
    # one partition's training set, as the training_set asset retrieves it (duckdb_asof)
    key = PartitionKey("2025-02-01", "south")
    span = [w for w in all_windows if w.key in training_windows(key.window, [w.key for w in all_windows], 1)]
    assert_frame_equal(
        partition_training_set(spec, view, span, key.cohort), partition_training_set(local_spec, local_view, span, key.cohort)
    )
    # fingerprints (cells) of the whole data, and the exclusion path (files listed through fsspec)
    assert frame_cells(spec, view, on_s3) == frame_cells(local_spec, local_view, asof_training_set(local_spec, local_view, all_windows, None))
    excluded = frozenset({s3.url(LABELS_FEB)})
    assert_frame_equal(
        label_rows(spec, all_windows, None, excluded),
        label_rows(local_spec, all_windows, None, frozenset({str(local / LABELS_FEB)})),
    )
    # validation reads the same schema and finds nothing wrong
    check_label_source(spec, view)
    assert validate_sources(spec, view) == {}
    assert "httpfs" not in _loaded_extensions()


def test_feast_paths_refuse_object_store_feature_sources_naming_the_fix(s3_sources):
    project = s3_sources
    view = load_feature_service_view(project.spec)
    with pytest.raises(SpecError, match=r"retrieval: feast cannot read feature view 'customer_activity_fv'.*s3://.*httpfs.*retrieval: duckdb_asof"):
        build_definitions(project.spec.model_copy(update={"retrieval": "feast"}))
    with pytest.raises(SpecError, match=r"online_features .* cannot read feature view .*httpfs"):
        materialize_online(project.spec, view, None)


def _requested(result) -> dict[str, str]:
    """partition -> reason over every run request of a tick."""
    out: dict[str, str] = {}
    for request in result.run_requests:
        out |= json.loads(request.tags[REASONS_TAG])
    return out


def _changed_files(result) -> int:
    message = result.skip_message or ""
    return int(message.split(" changed file(s)")[0].rsplit("(", 1)[-1]) if " changed file(s)" in message else -1


def materialize_training(project: Project) -> None:
    """Every partition, the fallback and the bundle in one run (``materialize_all`` without the
    online store, which Feast cannot load from S3: see test_feast_paths_refuse_...)."""
    keys = [w.key for w in windows(project.spec)]
    cohorts = list(project.spec.cohorts)
    assets = retraining_assets(project.defs, project.spec)
    selection = [k for a in assets for k in a.keys if k.path[-1] != "online_features"]
    result = materialize(
        assets,
        selection=selection,
        instance=project.instance,
        resources=project.defs.resources,
        tags={
            "dagster/asset_partition_range_start": str(PartitionKey(keys[0], cohorts[0]).to_dagster()),
            "dagster/asset_partition_range_end": str(PartitionKey(keys[-1], cohorts[-1]).to_dagster()),
        },
    )
    assert result.success


@pytest.mark.parametrize("store", ["local", "s3"])
def test_the_sensor_on_s3_sees_exactly_the_edited_or_deleted_object_and_not_an_identical_upload(s3, tmp_path, store):
    """Sources on S3; the storage (sub-models, training sets, bundle) on disk, then on S3 too."""
    from retrain_plugins.demo import scenarios
    from retrain_plugins.layout import model_store, training_set_rel, training_sets

    overrides = {"store": {"url": s3.url("retrain")}} if store == "s3" else {}
    project = s3_project(tmp_path / "project", s3, **overrides)
    local = project.root / "local"
    models = model_store(project.spec)
    materialize_training(project)
    first = tick(project.defs, project.sensor, project.instance)  # records the listing
    assert first.run_requests == [] and _changed_files(first) == 11, first
    settled = tick(project.defs, project.sensor, project.instance)
    assert settled.run_requests == [] and _changed_files(settled) == 0, settled

    # An identical re-upload: a new LastModified, the same ETag -> no change, nothing read.
    before = s3.client.head_object(Bucket=s3.bucket, Key=LABELS_FEB)
    time.sleep(1.1)  # LastModified has one-second resolution
    upload(s3, local / LABELS_FEB, LABELS_FEB)
    after = s3.client.head_object(Bucket=s3.bucket, Key=LABELS_FEB)
    assert after["LastModified"] > before["LastModified"] and after["ETag"] == before["ETag"]
    same = tick(project.defs, project.sensor, project.instance)
    assert same.run_requests == [] and _changed_files(same) == 0, same.skip_message

    # An edited object (other content, so another ETag): exactly its partition.
    scenarios.edit_rows(local, "2025-02", "south")
    upload(s3, local / LABELS_FEB, LABELS_FEB)
    assert _etag(s3, LABELS_FEB) != after["ETag"].strip('"')
    edited = tick(project.defs, project.sensor, project.instance)
    assert _requested(edited) == {"2025-02-01/south": "edited_rows"}
    before = {k: (e["sha256"], models.storage.token(e["path"])) for k, e in models.entries().items()}
    assert all(r.success for r in execute(project.defs, project.spec, edited.run_requests, project.instance))
    after = {k: (e["sha256"], models.storage.token(e["path"])) for k, e in models.entries().items()}
    assert {k for k in after if after[k] != before[k]} == {PartitionKey("2025-02-01", "south")}  # the others untouched
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    # what the run trained on equals the same retrieval over the local copies of the same files
    key = PartitionKey("2025-02-01", "south")
    local_spec, local_view = local_twin(project)
    span = [w for w in windows(project.spec) if w.key == key.window]
    stored = pl.read_parquet(training_sets(project.spec).read_bytes(training_set_rel(key)))
    assert_frame_equal(stored, partition_training_set(local_spec, local_view, span, key.cohort))
    assert models.storage.local == (store == "local")

    # A deleted object: the windows its rows were in, every cohort there.
    march = "sources/labels/month=2025-03/part-0.parquet"
    s3.client.delete_object(Bucket=s3.bucket, Key=march)
    deleted = tick(project.defs, project.sensor, project.instance)
    assert _requested(deleted) == {f"2025-03-01/{c}": "edited_rows" for c in project.spec.cohorts}

    # Every object of a source gone (a moved bucket, a typo'd prefix): refused, never "0 files".
    for key_ in [k for k in upload_sources_keys(local) if "/labels/" in k and k != march]:
        s3.client.delete_object(Bucket=s3.bucket, Key=key_)
    with pytest.raises(Exception, match=r"source 'labels' \(s3://.*\) lists no files; the last tick recorded"):
        tick(project.defs, project.sensor, project.instance)


def upload_sources_keys(local: Path) -> list[str]:
    return sorted(p.relative_to(local).as_posix() for p in (local / "sources").rglob("*.parquet"))


def test_each_connection_lists_a_glob_afresh_and_answers_reads_from_that_listing(s3, s3_server):
    """A DuckDB connection reads an S3 glob from a listing taken after it opened (an object uploaded
    since the last connection is read), and its reads' size and modification-time requests are
    answered from that listing: no HEAD request per file (there were ~9 per file per query); the
    objects read before are served from memory (remote_reads)."""
    import io

    def put(name: str, values: list[int]) -> None:
        buffer = io.BytesIO()
        pl.DataFrame({"x": values}).write_parquet(buffer)
        s3.client.put_object(Bucket=s3.bucket, Key=f"t/{name}.parquet", Body=buffer.getvalue())

    def total() -> int:
        url = s3.url("t/*.parquet")
        return connect(url).execute(f"SELECT sum(x) FROM {parquet('p')}", {"p": url}).fetchone()[0]

    put("a", [1, 2]), put("b", [10])
    assert total() == 13
    put("c", [100])
    logged = len(s3_server.log.read_text().splitlines())
    assert total() == 113 and total() == 113
    requests = [line for line in s3_server.log.read_text().splitlines()[logged:] if '"' in line]
    methods = [line.split('"')[1].split()[0] for line in requests]
    paths = [line.split('"')[1].split()[1] for line in requests]
    assert "HEAD" not in methods, requests
    assert sum("list-type=2" in p for p in paths) == 2, requests  # one listing per connection
    assert [p for p in paths if p.endswith(".parquet")] == [f"/{s3.bucket}/t/c.parquet"], requests  # a, b: in memory


def _requests_since(server, logged: int) -> list[tuple[str, str]]:
    """(method, path with query) of each request the server logged after line ``logged``."""
    lines = [line for line in server.log.read_text().splitlines()[logged:] if '"' in line]
    return [tuple(line.split('"')[1].split()[:2]) for line in lines]


def test_a_run_over_every_partition_fetches_each_object_once_and_lists_per_step_not_per_partition(s3, s3_server, s3_sources):
    """One run training all 12 partitions: each source object is fetched once (kept in memory by its
    listed ETag), each glob is listed for the step, not per connection, and no object is HEADed;
    the training sets are the ones built from the local copies. (Without: 411 object GETs and 211
    listings for this run; objects were HEADed ~11 times each.)"""
    project = s3_sources
    spec = project.spec
    local_spec, local_view = local_twin(project)
    logged = len(s3_server.log.read_text().splitlines())
    materialize_training(project)
    requests = _requests_since(s3_server, logged)
    objects = [path.split("?")[0] for method, path in requests if method == "GET" and path.split("?")[0].endswith(".parquet")]
    listings = [path for method, path in requests if method == "GET" and "list-type=2" in path]
    local = project.root / "local" / "sources"
    folders = {p.parent for p in local.rglob("*.parquet")} | {p.parent.parent for p in local.rglob("*.parquet")}
    assert len(objects) == len(set(objects)) > 0, objects  # each object read is fetched once
    assert [r for r in requests if r[0] == "HEAD" and r[1].endswith(".parquet")] == []  # (fsspec's glob HEADs each root once)
    # 34 here: the run's source listing, the step's globs (held), the serving steps'; 211 listed per connection
    assert len(listings) < 3 * len(folders), listings
    all_windows = windows(spec)
    for key in (PartitionKey("2025-01-01", "east"), PartitionKey("2025-03-01", "west")):
        span = [w for w in all_windows if w.key in training_windows(key.window, [w.key for w in all_windows], 1)]
        stored = pl.read_parquet(io.BytesIO(training_sets(spec).read_bytes(training_set_rel(key))))
        expected = partition_training_set(local_spec, local_view, span, key.cohort)
        assert_frame_equal(stored.select(expected.columns), expected)


def _parquet_body(values: list[int]) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame({"x": values}).write_parquet(buffer)
    return buffer.getvalue()


def _etag_of(fs, url: str) -> str:
    return fs.info(url)["ETag"].strip('"')


def test_objects_are_kept_by_listed_version_and_never_served_stale(s3, s3_server):
    """An edited object is read again (its listing shows another ETag); an identical re-upload is not
    fetched again; an object overwritten after the listing is an error naming it (s3fs's If-Match),
    nothing kept; a multipart upload (an ETag that is no MD5, as under SSE-KMS) is kept too; over
    the per-object limit nothing is kept."""
    from retrain_plugins.remote import list_folder_of, reading_filesystem
    from retrain_plugins.remote_reads import CachedReads, ObjectCache

    url = s3.url("k/a.parquet")
    s3.client.put_object(Bucket=s3.bucket, Key="k/a.parquet", Body=_parquet_body([1, 2]))

    def total() -> int:
        return connect(url).execute(f"SELECT sum(x) FROM {parquet('p')}", {"p": s3.url("k/*.parquet")}).fetchone()[0]

    def fetches(since: int, name: str = "a.parquet") -> int:
        return sum(1 for m, p in _requests_since(s3_server, since) if m == "GET" and p.split("?")[0].endswith(name))

    logged = len(s3_server.log.read_text().splitlines())
    assert total() == 3 and total() == 3
    assert fetches(logged) == 1  # the second query served from memory
    s3.client.put_object(Bucket=s3.bucket, Key="k/a.parquet", Body=_parquet_body([1, 2]))  # the same bytes again
    logged = len(s3_server.log.read_text().splitlines())
    assert total() == 3 and fetches(logged) == 0
    s3.client.put_object(Bucket=s3.bucket, Key="k/a.parquet", Body=_parquet_body([10, 20]))  # edited
    logged = len(s3_server.log.read_text().splitlines())
    assert total() == 30 and fetches(logged) == 1

    # a multipart upload: its ETag is not the content's MD5, and it is kept all the same
    upload = s3.client.create_multipart_upload(Bucket=s3.bucket, Key="k/m.parquet")
    part = s3.client.upload_part(
        Bucket=s3.bucket, Key="k/m.parquet", UploadId=upload["UploadId"], PartNumber=1, Body=_parquet_body([100])
    )  # fmt: skip
    s3.client.complete_multipart_upload(
        Bucket=s3.bucket, Key="k/m.parquet", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )  # fmt: skip
    logged = len(s3_server.log.read_text().splitlines())
    assert total() == 130 and total() == 130
    fs = reading_filesystem(url)
    assert isinstance(fs, CachedReads)
    assert _etag_of(fs, s3.url("k/m.parquet")).endswith("-1") and fetches(logged, "m.parquet") == 1

    # a cache too small for the object keeps nothing: every open reads the object again
    tiny = CachedReads(fs.inner, ObjectCache(max_bytes=64))
    fs.invalidate_cache()
    logged = len(s3_server.log.read_text().splitlines())
    for _ in range(2):
        with tiny.open(url) as handle:
            assert pl.read_parquet(handle)["x"].to_list() == [10, 20]
    assert len(tiny.cache) == 0 and fetches(logged) >= 2

    # overwritten between the listing and the read: an error naming the object, nothing kept
    s3.client.put_object(Bucket=s3.bucket, Key="k/a.parquet", Body=_parquet_body([7]))
    fs.invalidate_cache()
    list_folder_of(url)  # the listing a connection reads from: [7]'s ETag, never read
    listed = _etag_of(fs, url)
    s3.client.put_object(Bucket=s3.bucket, Key="k/a.parquet", Body=_parquet_body([8]))
    kept = len(fs.cache)
    with pytest.raises(OSError, match=r"k/a\.parquet"):
        fs.open(url)
    assert fs.cache.get((url, listed)) is None and len(fs.cache) == kept
    assert total() == 108  # a new connection lists it again


def test_content_md5_is_gcs_and_azure_content_md5_never_an_s3_etag():
    import base64
    import hashlib

    digest = hashlib.md5(b"x").hexdigest()
    assert content_md5({"md5Hash": base64.b64encode(bytes.fromhex(digest)).decode()}) == digest  # GCS
    assert content_md5({"content_settings": {"content_md5": bytes.fromhex(digest)}}) == digest  # Azure
    assert content_md5({"ETag": f'"{digest}"'}) is None  # S3: under SSE-KMS an ETag is no MD5 (s3fs checks it)
    assert content_md5({"etag": "0x8DB1"}) is None and content_md5({"size": 3}) is None


def test_listings_held_keep_one_listing_for_a_step_and_connections_outside_list_afresh(s3):
    from retrain_plugins.sql import listings_held

    def put(name: str) -> None:
        buffer = io.BytesIO()
        pl.DataFrame({"x": [1]}).write_parquet(buffer)
        s3.client.put_object(Bucket=s3.bucket, Key=f"h/{name}.parquet", Body=buffer.getvalue())

    def count() -> int:
        url = s3.url("h/*.parquet")
        return connect(url).execute(f"SELECT count(*) FROM {parquet('p')}", {"p": url}).fetchone()[0]

    put("a")
    with listings_held():
        assert count() == 1
        put("b")
        assert count() == 1  # the step's listing
    assert count() == 2  # listed afresh


def test_a_missing_bucket_fails_and_an_empty_prefix_warns(s3, caplog):
    with pytest.raises(DataError, match=r"s3://no-such-bucket-here does not exist"):
        file_stats("s3://no-such-bucket-here/labels/*/*.parquet")
    with caplog.at_level(logging.WARNING, logger="retrain_plugins.remote"):
        assert file_stats(s3.url("labels/*/*.parquet")) == {}
    assert f"source {s3.url('labels/*/*.parquet')} matches no files" in caplog.text


def test_an_unreachable_endpoint_fails_the_listing_naming_the_source(s3, monkeypatch):
    import s3fs

    from .s3server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(DataError, match=r"cannot list source s3://.*/labels/\*/\*\.parquet: .*(Could not connect|Connect)"):
        file_stats(s3.url("labels/*/*.parquet"))


def test_a_feast_s3_endpoint_override_must_be_the_endpoint_the_files_are_read_from(s3, s3_sources, monkeypatch):
    from retrain_plugins.validation import check_spec_against_view

    spec, view = s3_sources.spec, load_feature_service_view(s3_sources.spec)
    assert all(fv.s3_endpoint_override is None for fv in view.views)  # the demo repo sets none
    first = view.views[0]
    elsewhere = dataclasses.replace(view, views=(dataclasses.replace(first, s3_endpoint_override="http://10.1.2.3:9000"), *view.views[1:]))
    assert elsewhere.version == view.version  # where files live is not the definition
    with pytest.raises(SpecError, match=r"'customer_activity_fv'.*s3_endpoint_override='http://10.1.2.3:9000'.*set AWS_ENDPOINT_URL_S3=http://10.1.2.3:9000"):
        check_spec_against_view(spec, elsewhere)
    here = dataclasses.replace(view, views=(dataclasses.replace(first, s3_endpoint_override=s3.endpoint + "/"), *view.views[1:]))
    check_spec_against_view(spec, here)


def test_change_tokens_per_backend():
    from datetime import datetime, timezone

    from retrain_plugins.remote import change_token, is_remote, local_path

    s3_entry = {"name": "b/k", "size": 5, "ETag": '"abc"', "VersionId": "v2", "LastModified": datetime(2025, 1, 1, tzinfo=timezone.utc)}
    assert change_token(s3_entry, {"s3", "s3a"}) == "s3-etag:abc"
    assert change_token(s3_entry, {"s3", "s3a"}, version_aware=True) == "s3-etag:abc;version=v2"
    assert change_token({**s3_entry, "VersionId": "null"}, {"s3"}, version_aware=True) == "s3-etag:abc"
    assert change_token({"size": 5, "md5Hash": "q1w2", "generation": "17"}, {"gs", "gcs"}) == "gcs-md5:q1w2"
    assert change_token({"size": 5, "generation": "17"}, {"gs", "gcs"}) == "gcs-generation:17"
    assert change_token({"size": 5, "etag": "0x8D", "content_settings": {"content_md5": bytearray(b"\x01\xff")}}, {"az", "abfs"}) == "md5:01ff"
    assert change_token({"size": 5, "etag": "0x8D", "content_settings": {"content_md5": None}}, {"az"}) == "etag:0x8D"
    assert change_token({"size": 5, "mtime": 1.5}, {"sftp"}) == "stat:5:1500000000"
    assert [is_remote(p) for p in ("s3://b/k", "gs://b/k", "file:///a/b", "/a/b", "rel/*.parquet", "simplecache::s3://b/k")] == [
        True, True, False, False, False, True,
    ]
    assert local_path("file:///a/b/*.parquet") == "/a/b/*.parquet" and local_path("rel/x") == "rel/x"


def test_a_server_that_cannot_start_is_a_clear_failure_not_a_skip(tmp_path):
    from .s3server import start

    fake = tmp_path / "moto_server"
    fake.write_text("#!/bin/sh\necho 'address already in use' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"(?s)did not start on 127.0.0.1.*exit code 3.*address already in use"):
        start(tmp_path, attempts=2, executable=fake)
