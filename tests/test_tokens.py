"""Edits the listing cannot see: same size and mtime (cp -p, rsync -t, tar x), and full checks."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import polars as pl

from retrain_plugins import build_definitions, state_store
from retrain_plugins.changes.scan import full_check_due
from retrain_plugins.dagster.execution import tick
from retrain_plugins.dagster.tags import REASONS_TAG
from retrain_plugins.layout import state_path

from .conftest import Project
from .helpers import make_spec

LABELS_FEB = "sources/labels/month=2025-02/part-0.parquet"
EDITED = {"2025-02-01/south": "edited_rows"}


def _requested(result) -> dict[str, str]:
    """partition -> reason over every run request of a tick."""
    out: dict[str, str] = {}
    for request in result.run_requests:
        out |= json.loads(request.tags[REASONS_TAG])
    return out


def _settled(project: Project) -> Project:
    first = tick(project.defs, project.sensor, project.instance)
    assert first.run_requests == [], first
    return project


def _counts(message: str) -> tuple[int, int]:
    """(changed files, files seen) from a skipped tick's message."""
    changed, seen = re.search(r"(\d+) changed file\(s\) of (\d+)", message).groups()
    return int(changed), int(seen)


def same_size_edit(path: Path, out: Path, cohort: str = "south") -> None:
    """Write to ``out`` ``path``'s label rows with two of ``cohort``'s labels swapped (one 0, one 1),
    choosing the pair so that the file keeps its size byte for byte; its content differs."""
    frame = pl.read_parquet(path)
    churned = frame["churned"].to_numpy()
    rows = np.flatnonzero((frame["region"] == cohort).to_numpy())
    zeros, ones = [i for i in rows if churned[i] == 0], [i for i in rows if churned[i] == 1]
    size = path.stat().st_size
    for i in zeros:
        for j in ones:
            swapped = churned.copy()
            swapped[i], swapped[j] = churned[j], churned[i]
            frame.with_columns(pl.Series("churned", swapped)).write_parquet(out, compression="zstd", statistics=True)
            if out.stat().st_size == size:
                return
    raise AssertionError(f"no same-size label swap found in {path}")


def _write_keeping_times(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place (same inode) and put its old atime/mtime back (``touch -r``)."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_same_size_edit_with_the_old_mtime_is_seen_and_requested(materialized, tmp_path):
    _settled(materialized)
    path = materialized.data / LABELS_FEB
    before = path.stat()
    same_size_edit(path, tmp_path / "edited.parquet")
    _write_keeping_times(path, (tmp_path / "edited.parquet").read_bytes())
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requested(result) == EDITED
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []


def test_a_cp_p_copy_over_the_file_is_seen_and_requested(materialized, tmp_path):
    _settled(materialized)
    path = materialized.data / LABELS_FEB
    edited = tmp_path / "edited.parquet"
    same_size_edit(path, edited)
    st = path.stat()
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))  # as the file was when it was copied out
    subprocess.run(["cp", "-p", str(edited), str(path)], check=True)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _requested(result) == EDITED


def test_an_identical_cp_p_rewrite_requests_nothing_and_reads_no_data(materialized, tmp_path):
    _settled(materialized)
    path = materialized.data / LABELS_FEB
    copy = tmp_path / "copy.parquet"
    subprocess.run(["cp", "-p", str(path), str(copy)], check=True)
    subprocess.run(["cp", "-p", str(copy), str(path)], check=True)  # same bytes, same mtime, new ctime
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert result.run_requests == []
    assert _counts(result.skip_message)[0] == 0 and "re-fingerprinted" not in result.skip_message
    recorded = state_store(materialized.spec).files()[("labels", str(path))]
    assert (recorded.ctime_ns, recorded.inode) == (path.stat().st_ctime_ns, path.stat().st_ino)  # no token next time


def test_a_migrated_store_reinspects_its_files_once(materialized):
    _settled(materialized)
    with sqlite3.connect(state_path(materialized.spec)) as con:  # rows as a version 3 store left them
        con.execute("UPDATE files SET ctime_ns = NULL, inode = NULL, token = NULL")
    first = tick(materialized.defs, materialized.sensor, materialized.instance)
    changed, seen = _counts(first.skip_message)
    assert first.run_requests == [] and changed == seen > 0  # the fingerprints decided: nothing changed
    second = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert _counts(second.skip_message) == (0, seen)


def test_full_check_every_2_refingerprints_every_second_tick(materialized):
    spec = make_spec(materialized.root, change_detection={"full_check_every": 2})
    project = _settled(materialized._replace(spec=spec, defs=build_definitions(spec)))
    state = state_store(spec)
    counts = []
    for _ in range(4):
        due = full_check_due(spec, state)
        result = tick(project.defs, project.sensor, project.instance)
        assert result.run_requests == [], result  # unchanged data: the fingerprints request nothing
        changed, seen = _counts(result.skip_message)
        counts.append(changed)
        assert changed == (seen if due else 0)
        assert ("re-fingerprinted" in result.skip_message) == due
    assert sorted(counts) == [0, 0, seen, seen] and counts[0] != counts[1]


def test_an_edit_hidden_from_the_listing_waits_for_the_full_check(materialized, tmp_path):
    spec = make_spec(materialized.root, change_detection={"full_check_every": 2})
    project = _settled(materialized._replace(spec=spec, defs=build_definitions(spec)))
    state = state_store(spec)
    if full_check_due(spec, state):
        tick(project.defs, project.sensor, project.instance)
    path = project.data / LABELS_FEB
    same_size_edit(path, tmp_path / "edited.parquet")
    _write_keeping_times(path, (tmp_path / "edited.parquet").read_bytes())
    st = path.stat()
    with sqlite3.connect(state_path(spec)) as con:
        con.execute("UPDATE files SET ctime_ns = ?, inode = ? WHERE path = ?", (st.st_ctime_ns, st.st_ino, str(path)))
    plain = tick(project.defs, project.sensor, project.instance)
    assert plain.run_requests == [] and _counts(plain.skip_message)[0] == 0  # the listing cannot see it
    full = tick(project.defs, project.sensor, project.instance)
    assert _requested(full) == EDITED
