"""End-to-end fixtures: one temp project served by a real ``dagster dev`` per session, and Chromium.

``served`` builds a test-size project (``new_project``: copied Feast repo, generated data, applied
registry), writes a code location that declares it through the ``RetrainingComponent``,
materializes every partition in-process on the same ``DAGSTER_HOME`` instance the server will
use, then starts ``dagster dev`` (webserver + daemon) on a free loopback port and waits until the
code location is loaded and the daemons are healthy. It is package-scoped: the finalizer ends the
server's whole process group after the last end-to-end test, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance

from retrain_plugins.dagster.component import spec_from_defs_yaml
from retrain_plugins.dagster.execution import materialize_all

from ..conftest import Project, new_project
from .dagster_dev import LOCATION, PACKAGE, DagsterDev, serving, write_code_location, write_instance
from .graphql import GraphQL

CHROMIUM = Path("/usr/bin/chromium")
READY_TIMEOUT = 240.0


@dataclass
class Served:
    """The project, and the running ``dagster dev`` that serves it."""

    project: Project
    server: DagsterDev

    @property
    def graphql(self) -> GraphQL:
        return self.server.graphql

    @property
    def url(self) -> str:
        return self.server.url

    location = LOCATION

    @property
    def sensor(self) -> str:
        return self.project.sensor


@pytest.fixture(scope="package")
def served(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("e2e")
    project = new_project(root / "project")
    home = write_instance(root / "dagster_home")
    workspace = write_code_location(root / "location", project.spec)
    # the code location declares exactly the spec the in-process materialization uses
    assert spec_from_defs_yaml(root / "location" / PACKAGE / "defs" / "churn" / "defs.yaml") == project.spec
    with DagsterInstance.from_config(str(home)) as instance:
        assert materialize_all(project.defs, project.spec, instance).success
    with serving(workspace, home, root / "dagster_dev.log", READY_TIMEOUT) as server:
        yield Served(project, server)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (the tests run as root in CI)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and installing it needs root: run `apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command, timeout in ((["apt-get", "update"], 600), (["apt-get", "install", "-y", "chromium"], 1200)):
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package")
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"`{' '.join(command)}` failed ({exc.returncode}):\n{exc.stderr[-2000:]}")
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(command)}` did not finish within {timeout}s")
    if not CHROMIUM.exists():
        pytest.fail(f"`apt-get install -y chromium` succeeded but {CHROMIUM} does not exist")
    return CHROMIUM


def pytest_collection_modifyitems(config, items) -> None:
    """Within this package, the Postgres server's tests first, browser tests last.

    Browser screenshots then show what the webserver tests did; the Postgres tests' own
    ``dagster dev`` is up and gone before the package's ``served`` one starts (two servers' daemons
    on 2 cores slow each other). Only the order of this package's items changes, and they stay
    where they were in the session, so the package-scoped server is up only while they run.
    """
    here = Path(__file__).parent
    positions = [i for i, item in enumerate(items) if here in item.path.parents]
    rank = {"test_postgres_instance.py": 0, "test_browser.py": 2}
    ours = sorted((items[i] for i in positions), key=lambda item: rank.get(item.path.name, 1))
    for i, item in zip(positions, ours):
        items[i] = item
