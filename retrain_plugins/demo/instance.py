"""The demo's Dagster instance (``data/dagster_home/dagster.yaml``), written when missing.

``make demo`` and ``make dev`` use it; ``python -m retrain_plugins.demo.instance DAGSTER_HOME``
writes it (an existing ``dagster.yaml`` is left alone). What it sets, and why:

- ``run_coordinator``: Dagster's ``QueuedRunCoordinator`` (what ``dagster dev`` uses by default)
  with ``dequeue_interval_seconds: 1``: the daemon looks at the queue every second instead of
  Dagster's default 5 s, which every queued run (a sensor's update) otherwise waits for before it
  starts; ``max_concurrent_runs: 1``: one training at a time, because two concurrent CatBoost fits
  slow each other down on a small machine (see bench/RESULTS-daemon.md for one run vs two).
- ``telemetry: {enabled: false}``: a local demo instance.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEMO_INSTANCE_YAML = """\
# The demo's Dagster instance, written by retrain_plugins.demo.instance when missing.
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1          # one training at a time (two CatBoost fits slow each other)
    dequeue_interval_seconds: 1     # Dagster's default is 5 s, paid by every queued run before it starts
"""


def write_demo_instance(home: Path) -> Path:
    """``home/dagster.yaml`` with :data:`DEMO_INSTANCE_YAML` unless one exists; its path."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists():
        path.write_text(DEMO_INSTANCE_YAML)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m retrain_plugins.demo.instance DAGSTER_HOME")
    print(write_demo_instance(Path(sys.argv[1])))
