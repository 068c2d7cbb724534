"""The real ``dg`` binary (dagster-dg-cli), as the README runs it from a project root.

A new dg project in a temp folder (``pyproject.toml`` with ``[tool.dg]``, a package with
``definitions.py`` loading ``defs/``) gets a retraining by ``dg scaffold defs``; ``dg check defs``
refuses it until the two empty values are filled in, then passes; ``dg list defs`` shows it; ``dg
dev`` serves it. The example project itself (``dagster_project/``) lists through ``dg list defs``.
Each dg call starts a Python process (2-8 s here), so each test makes as few as it can.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrain_plugins.dagster.component import TYPE_NAME
from retrain_plugins.dagster.component_scaffold import defs_yaml_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")
PACKAGE = "retrain_dg_sandbox"

PYPROJECT = f"""\
[project]
name = "retrain-dg-sandbox"
version = "0.0.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{PACKAGE}"
"""
DEFINITIONS = (REPO_ROOT / "dagster_project" / "definitions.py").read_text()


def dg(*args: str, cwd: Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """``dg <args>`` in ``cwd``, in this test run's virtual environment (as an activated venv would)."""
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"dg {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def dg_project(tmp_path) -> Path:
    """An empty dg project; its retraining's feature repo and data folders exist (empty: no registry yet)."""
    root = tmp_path / "project"
    (root / PACKAGE / "defs").mkdir(parents=True)
    (root / "feature_repo").mkdir()
    (root / "data").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "defs" / "__init__.py").write_text("")
    (root / PACKAGE / "definitions.py").write_text(DEFINITIONS)
    return root


def _fill(path: Path) -> None:
    text = path.read_text()
    text = text.replace('feature_service: ""', "feature_service: churn_model_v1", 1)
    path.write_text(text.replace('path: ""', "path: sources/labels/*/*.parquet", 1))


def test_dg_lists_scaffolds_checks_and_lists_a_retraining(dg_project):
    listed = dg("list", "components", "--json", cwd=dg_project)
    components = {c["key"]: c for c in json.loads(listed.stdout)["items"]}
    assert components[TYPE_NAME]["summary"].startswith("One partial retraining")

    dg("scaffold", "defs", TYPE_NAME, "churn2", cwd=dg_project)
    defs_yaml = dg_project / PACKAGE / "defs" / "churn2" / "defs.yaml"
    assert "feature_repo: ../../../feature_repo" in defs_yaml.read_text()

    unfilled = dg("check", "defs", cwd=dg_project, check=False)
    output = unfilled.stdout + unfilled.stderr
    assert unfilled.returncode != 0
    for attribute, line in (("feature_service", 13), ("labels.path", 19)):
        assert re.search(rf"attributes\.{re.escape(attribute)} at \S*churn2/defs\.yaml:{line} is empty", output), output

    _fill(defs_yaml)
    checked = dg("check", "defs", cwd=dg_project)
    assert "All definitions loaded successfully." in checked.stdout

    listed = json.loads(dg("list", "defs", "--json", cwd=dg_project).stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    assert {"churn2/training_set", "churn2/sub_model", "churn2/model_bundle", "churn2/labels"} <= keys
    assert {s["name"] for s in listed["sensors"]} == {"churn2_change_sensor"}


def test_dg_list_defs_on_the_example_project():
    """From the repository root, as the README says: the demo retraining, its assets and sensor."""
    listed = json.loads(dg("list", "defs", "--json", cwd=REPO_ROOT).stdout)
    assert {"churn/sub_model", "churn/model_bundle"} <= {a["asset_key"] for a in listed["assets"]}
    assert "churn_change_sensor" in {s["name"] for s in listed["sensors"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dg_dev(dg_project, tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``dg dev`` serving the project (one filled-in retraining); stopped as Ctrl-C stops it."""
    folder = dg_project / PACKAGE / "defs" / "churn2"
    folder.mkdir()
    (folder / "defs.yaml").write_text(defs_yaml_text("churn2", "../../../feature_repo", "../../../data"))
    _fill(folder / "defs.yaml")
    port = _free_port()
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    log = (tmp_path / "dg_dev.log").open("w")
    process = subprocess.Popen(
        [str(DG), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=dg_project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        # Ctrl-C signals the terminal's whole foreground group: dg dev, and the dagster dev it runs.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
            process.wait()
        log.close()


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_dg_dev_serves_the_retraining(dg_dev):
    url, process = dg_dev
    deadline, assets = time.monotonic() + 120, set()
    while time.monotonic() < deadline and process.poll() is None:
        try:
            nodes = _graphql(url, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
            assets = {"/".join(n["assetKey"]["path"]) for n in nodes}
        except (OSError, KeyError, TypeError):
            pass
        if assets:
            break
        time.sleep(1)
    assert process.poll() is None, "dg dev exited"
    assert {"churn2/training_set", "churn2/sub_model", "churn2/model_bundle"} <= assets
