"""Warm run workers: dagster-celery's ``CeleryRunLauncher`` and a real Celery worker, no broker server.

The daemon hands each run to a Celery queue; a long-lived worker (``dagster-celery worker start``,
the command docs/deployment.md gives) executes it in a pool process that stays up between runs,
with Dagster, the code location and the trainer already imported. The broker is kombu's
``filesystem`` transport and the result backend Celery's ``file://`` one, both in a temp folder:
the same launcher, tasks and worker as with Redis or RabbitMQ, without a server to start (there
is none on this machine and no network to fetch one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

QUEUE = "dagster"
# How often the worker looks for a message in the broker folder (kombu's default is 1 s: every
# run would wait half of that on average before a worker sees it).
POLLING_INTERVAL_SECONDS = 0.1


def celery_settings(folder: Path) -> dict[str, Any]:
    """Broker, backend and transport options of a Celery app whose queue is the folder ``folder``."""
    messages, results = folder / "messages", folder / "results"
    for path in (messages, results, folder / "processed"):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "broker": "filesystem://",
        "backend": f"file://{results}",
        "config_source": {
            "broker_transport_options": {
                "data_folder_in": str(messages),
                "data_folder_out": str(messages),
                "processed_folder": str(folder / "processed"),
                "store_processed": False,
                "polling_interval": POLLING_INTERVAL_SECONDS,
            },
            "broker_connection_retry_on_startup": True,
        },
    }


def celery_run_launcher(folder: Path) -> dict[str, Any]:
    """The ``run_launcher`` block of a ``dagster.yaml`` (docs/deploy/dagster-celery.yaml's, with this broker)."""
    return {
        "module": "dagster_celery.launcher",
        "class": "CeleryRunLauncher",
        "config": {**celery_settings(folder), "default_queue": QUEUE},
    }


class CeleryWorker:
    """``dagster-celery worker start`` for the instance at ``home``: ``concurrency`` warm pool processes."""

    def __init__(self, folder: Path, home: Path, cwd: Path, concurrency: int = 1) -> None:
        self.folder, self.home, self.cwd, self.concurrency = folder, home, cwd, concurrency
        self.log_path = folder / "worker.log"
        self.config = folder / "celery-worker.yaml"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.config.write_text(yaml.safe_dump({"execution": {"config": celery_settings(self.folder)}}, sort_keys=False))
        command = [
            str(Path(sys.executable).with_name("dagster-celery")), "worker", "start",
            "-A", "dagster_celery.app", "-y", str(self.config), "-q", QUEUE, "-n", "retrain",
            "--loglevel", "INFO", "--", f"--concurrency={self.concurrency}", "--pool=prefork",
        ]  # fmt: skip
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        # celery is a console script beside this interpreter; dagster-celery calls it by name
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_tail(100_000):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited ({self.process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Celery worker was not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def stop(self, grace: float = 20.0) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None


@contextlib.contextmanager
def working(folder: Path, home: Path, cwd: Path, concurrency: int = 1, timeout: float = 120.0) -> Iterator[CeleryWorker]:
    """A started :class:`CeleryWorker`, stopped on exit; one that does not come up fails the test with its log."""
    import pytest

    worker = CeleryWorker(folder, home, cwd, concurrency)
    try:
        try:
            worker.start(timeout)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"the Celery worker did not come up: {exc}")
        yield worker
    finally:
        worker.stop()
