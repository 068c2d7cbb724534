"""A temp retraining project served by a real ``dagster dev`` (webserver + daemon) on loopback.

The code location is what a user writes: a package whose ``definitions.py`` loads its ``defs/``
folder, where ``churn/defs.yaml`` declares a ``RetrainingComponent`` for the temp project's data
(never the repo's ``data/``). The instance lives in a temp ``DAGSTER_HOME`` with a queued run
coordinator that runs one run at a time (two concurrent CatBoost fits slow each other on 2 cores).
``dagster dev`` runs in its own process group; :meth:`DagsterDev.stop` ends the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from retrain_plugins import RetrainingSpec
from retrain_plugins.dagster.component import TYPE_NAME

from .graphql import GraphQL, wait_for

LOCATION = "e2e_retraining"
PACKAGE = "e2e_retraining"
# Below the sensor daemon's own 5 s loop (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME), so that every
# loop ticks the sensor: at 5 s, a loop that comes a moment early finds it not due and the tick comes
# 10 s after the previous one.
SENSOR_INTERVAL_SECONDS = 2
# the retraining's assets in the code location (GraphQL asset paths)
TRAINING_SET, SUB_MODEL, BUNDLE = ["churn", "training_set"], ["churn", "sub_model"], ["churn", "model_bundle"]

INSTANCE_YAML = {
    "telemetry": {"enabled": False},
    "run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        # dequeue_interval_seconds: how often the daemon looks at the queue (Dagster's default is 5 s;
        # every queued run waits up to that long before it is launched)
        "config": {"max_concurrent_runs": 1, "dequeue_interval_seconds": 1},
    },
    "code_servers": {"local_startup_timeout": 240},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_instance(
    home: Path, max_concurrent_runs: int = 1, dequeue_interval_seconds: int = 1, run_launcher: Mapping | None = None
) -> Path:
    """A fresh DAGSTER_HOME with the instance config above (queue limit and interval as given; a
    ``run_launcher`` block instead of Dagster's default launcher, e.g.
    :func:`tests.e2e.celery_worker.celery_run_launcher`)."""
    home.mkdir(parents=True, exist_ok=True)
    config = {**INSTANCE_YAML["run_coordinator"]["config"], "max_concurrent_runs": max_concurrent_runs,
              "dequeue_interval_seconds": dequeue_interval_seconds}  # fmt: skip
    instance = {**INSTANCE_YAML, "run_coordinator": {**INSTANCE_YAML["run_coordinator"], "config": config}}
    if run_launcher is not None:
        instance["run_launcher"] = dict(run_launcher)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    return home


# definitions.py as dg scaffolds it: Dagster calls ``defs()`` each time it loads the code location,
# which a run worker does twice per run (to reconstruct the job, then for its execution plan).
LAZY_DEFINITIONS = (
    '"""Loads defs/ like dagster_project/definitions.py does."""\n\n'
    "from pathlib import Path\n\nimport dagster as dg\n\n\n"
    "@dg.definitions\ndef defs() -> dg.Definitions:\n"
    "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
)
# The same definitions as a module-level object: built once per process at import, so a warm
# worker (docs/deployment.md, Celery) does not rebuild them for every run.
ONCE_DEFINITIONS = (
    '"""Loads defs/ once per process (a warm worker reuses them for every run)."""\n\n'
    "from pathlib import Path\n\nimport dagster as dg\n\n"
    "defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
)


def write_code_location(
    root: Path, spec: RetrainingSpec, sensor_interval_seconds: int = SENSOR_INTERVAL_SECONDS, definitions: str = "lazy"
) -> Path:
    """Write the code location package for ``spec`` under ``root``; return its workspace.yaml.

    The defs.yaml holds every field of ``spec``, with its paths relative to the defs.yaml folder.
    ``definitions``: ``lazy`` (dg's ``@dg.definitions`` function) or ``once`` (a module-level
    ``Definitions`` object).
    """
    package = root / PACKAGE
    folder = package / "defs" / spec.name
    folder.mkdir(parents=True)
    (root / "dg.toml").write_text(f'directory_type = "project"\n\n[project]\nroot_module = "{PACKAGE}"\n')
    (package / "__init__.py").write_text('"""End-to-end test code location."""\n')
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text({"lazy": LAZY_DEFINITIONS, "once": ONCE_DEFINITIONS}[definitions])
    attributes = spec.model_dump(mode="json")
    attributes["feature_repo"] = os.path.relpath(spec.feature_repo, folder)
    attributes["data_dir"] = os.path.relpath(spec.data_dir, folder)
    attributes["sensor_interval_seconds"] = sensor_interval_seconds
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": TYPE_NAME, "attributes": attributes}, sort_keys=False))
    workspace = root / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": f"{PACKAGE}.definitions",
                            "working_directory": str(root),
                            "location_name": LOCATION,
                        }
                    }
                ]
            }
        )
    )
    return workspace


class DagsterDev:
    """``dagster dev -w workspace.yaml`` on a free loopback port, logging to ``log_path``.

    ``env`` adds variables to the server's environment (e.g. the ``DAGSTER_PG_*`` a Postgres
    instance's dagster.yaml reads); its processes (daemon, code server, runs) inherit them.
    """

    def __init__(self, workspace: Path, home: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.workspace, self.home, self.log_path = workspace, home, log_path
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.graphql = GraphQL(self.url)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w", str(self.workspace),
            "-h", "127.0.0.1",
            "-p", str(self.port),
            "--code-server-log-level", "info",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workspace.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends webserver, daemon, code server, runs
            )

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def _alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"dagster dev exited ({code}); log tail:\n{self.log_tail()}")

    def wait_until_ready(self, timeout: float = 240.0) -> None:
        """Webserver answering, code location loaded, every required daemon healthy."""
        deadline = time.monotonic() + timeout

        def answering() -> bool:
            self._alive()
            return self.graphql.ping()

        wait_for(answering, deadline - time.monotonic(), "the webserver to answer GraphQL", interval=1.0)

        def location_loaded() -> bool:
            self._alive()
            entries = self.graphql.location_entries()
            entry = next((e for e in entries if e["name"] == LOCATION), None)
            if entry is None or entry["loadStatus"] != "LOADED":
                return False
            loaded = entry["locationOrLoadError"]
            if loaded["__typename"] != "RepositoryLocation":
                raise RuntimeError(f"code location failed to load: {loaded.get('message')}")
            return True

        wait_for(location_loaded, deadline - time.monotonic(), f"code location {LOCATION} to load", interval=1.0)

        def daemons_healthy() -> bool:
            self._alive()
            return all(d["healthy"] for d in self.graphql.daemon_statuses() if d["required"])

        wait_for(daemons_healthy, deadline - time.monotonic(), "the daemons to report healthy", interval=1.0)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after ``grace`` seconds."""
        if self.process is None:
            return
        group = self.process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(group):
                time.sleep(0.5)
            if not _group_alive(group):
                break
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of the group's leader count as gone once reaped; check /proc for live members
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


@contextlib.contextmanager
def serving(workspace: Path, home: Path, log: Path, timeout: float, env: Mapping[str, str] | None = None) -> Iterator["DagsterDev"]:
    """``dagster dev`` on ``workspace`` and ``home``, ready, stopped on exit; a server that does not
    come up fails the test with its log."""
    import pytest

    server = DagsterDev(workspace, home, log, env=env)
    try:
        server.start()
        try:
            server.wait_until_ready(timeout)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"dagster dev did not come up: {exc}\n--- dagster dev log ---\n{server.log_tail()}")
        yield server
    finally:
        server.stop()
