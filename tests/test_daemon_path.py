"""What a daemon-launched run and the sensor's process pay before any work: executor and imports.

A run launched by the daemon is a fresh process; under Dagster's default multiprocess executor
every step is one more. These tests pin the wiring that keeps a retraining run in one process
and the imports that keep the sensor's process, the router and the holdout metrics light.
Timings are measured by ``bench/daemon.py``, never asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from retrain_plugins import build_definitions

from .helpers import make_spec

REPO_ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_asset_jobs_execute_in_one_process(tmp_path):
    """UI backfills and the sensor's runs execute the implicit asset job: in-process by default."""
    defs = build_definitions(make_spec(tmp_path))
    assert defs.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor
    # two retrainings' definitions (components) merge: the same executor object
    merged = dg.Definitions.merge(defs, dg.Definitions(executor=dg.in_process_executor))
    assert merged.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor


def test_executor_left_to_the_code_location_on_request(tmp_path):
    """``executor=None``: a code location can set its own (dagster-k8s, dagster-celery) without a merge conflict."""
    own = dg.multiprocess_executor.configured({"max_concurrent": 2})
    defs = dg.Definitions.merge(build_definitions(make_spec(tmp_path), executor=None), dg.Definitions(executor=own))
    assert defs.resolve_implicit_global_asset_job_def().executor_def is own
    with pytest.raises(Exception, match="executor"):
        dg.Definitions.merge(build_definitions(make_spec(tmp_path)), dg.Definitions(executor=own))


def test_component_attribute_turns_the_in_process_executor_off(tmp_path):
    from retrain_plugins.dagster.component import RetrainingComponent

    spec = make_spec(tmp_path)
    attributes = {**spec.model_dump(mode="json"), "feature_repo": str(spec.feature_repo), "data_dir": str(spec.data_dir)}
    context = SimpleNamespace(path=tmp_path)  # build_defs reads only the defs.yaml folder (paths here are absolute)
    on = RetrainingComponent.from_attributes_dict(attributes=attributes).build_defs(context)
    off = RetrainingComponent.from_attributes_dict(attributes={**attributes, "in_process_executor": False}).build_defs(context)
    assert on.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor
    assert off.resolve_implicit_global_asset_job_def().executor_def is not dg.in_process_executor


def test_router_and_package_import_without_dagster():
    done = _python(
        """
        import sys
        import retrain_plugins
        assert "dagster" not in sys.modules, "import retrain_plugins imported dagster"
        from retrain_plugins.routing import RoutedModel
        from retrain_plugins import RoutedModel as again
        assert again is RoutedModel
        heavy = sorted(m for m in ("dagster", "feast", "catboost", "sklearn") if m in sys.modules)
        assert not heavy, f"the router imported {heavy}"
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_package_exports_every_public_name():
    import retrain_plugins

    assert set(retrain_plugins.__all__) <= set(dir(retrain_plugins))
    for name in retrain_plugins.__all__:
        assert getattr(retrain_plugins, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        retrain_plugins.nope  # noqa: B018


def test_a_passed_trainer_check_spares_later_processes_catboost(tmp_path):
    """The code server evaluating the sensor checks the trainer spec; once passed, without CatBoost."""
    check = f"""
        import sys
        from pathlib import Path
        from tests.helpers import make_spec
        from retrain_plugins.trainers import check_trainer_spec
        check_trainer_spec(make_spec(Path({str(tmp_path)!r})))
        print("catboost" in sys.modules)
    """
    env = {"RETRAIN_PLUGINS_CACHE": str(tmp_path / "cache")}
    first, second = _python(check, env), _python(check, env)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr[-2000:] + second.stderr[-2000:]
    assert first.stdout.split() == ["True"]  # checked: a one-tree fit
    assert second.stdout.split() == ["False"]  # remembered: no import
    assert len(list((tmp_path / "cache" / "trainer-checks").glob("*.ok"))) == 1


def test_a_failing_trainer_check_is_never_remembered(tmp_path, monkeypatch):
    from retrain_plugins.errors import SpecError
    from retrain_plugins.trainers import _checked, check_trainer_spec

    monkeypatch.setenv("RETRAIN_PLUGINS_CACHE", str(tmp_path / "cache"))
    _checked.cache_clear()
    bad = make_spec(tmp_path, trainer={"params": {"depth": -3}})
    for _ in range(2):
        with pytest.raises(SpecError, match="not valid"):
            check_trainer_spec(bad)
        _checked.cache_clear()
    assert not list((tmp_path / "cache").rglob("*.ok"))


def test_the_demo_instance_queues_runs_and_checks_the_queue_every_second(tmp_path):
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from retrain_plugins.demo.instance import write_demo_instance

    path = write_demo_instance(tmp_path / "home")
    with DagsterInstance.from_config(str(path.parent)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        assert coordinator.get_run_queue_config().max_concurrent_runs == 1
    path.write_text("telemetry:\n  enabled: false\n")
    write_demo_instance(path.parent)  # an existing instance config is the user's: left alone
    assert path.read_text() == "telemetry:\n  enabled: false\n"
