"""The deployment guide's dagster.yaml examples (docs/deploy/) are valid Dagster instance config.

Each file is checked with Dagster's own instance schema (``dagster_instance_config``: storage,
run queue, monitoring, every top-level key) and each configurable class in it (run coordinator,
run launcher) against that class's ``config_type()``, where the class can be imported. The
Kubernetes launcher comes from dagster-k8s, which this project does not install: for it the test
asserts that it is the only part left unchecked, and says so (``validate_example`` checks it too
wherever dagster-k8s is importable). dagster-celery is in the lock (the ``celery`` extra), so the
Celery launcher's block is checked against its own schema. The Postgres example is also loaded for
real against PostgreSQL by tests/test_postgres_instance.py and tests/e2e/test_postgres_instance.py,
and the Celery launcher run by tests/e2e/test_celery_launcher.py.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._config.field_utils import convert_potential_field
from dagster._core.instance.config import dagster_instance_config

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "docs" / "deploy"
CLASS_SECTIONS = ("run_coordinator", "run_launcher", "compute_logs", "local_artifact_storage", "scheduler")
ENV = {  # what the examples read with {env: ...}
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_HOST": "postgres.example",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_CELERY_BROKER_URL": "redis://redis:6379/0",
    "DAGSTER_CELERY_BACKEND_URL": "redis://redis:6379/1",
}
# the package each example's launcher needs, when it is not Dagster core
EXTERNAL = {"dagster-postgres.yaml": None, "dagster-k8s.yaml": "dagster_k8s", "dagster-celery.yaml": "dagster_celery"}


def validate_example(path: Path) -> dict[str, str]:
    """Validate one example; per configurable class: ``validated`` or ``not installed: <module>``.

    Raises ``DagsterInvalidConfigError`` (top level) or ``AssertionError`` (a class's config)
    naming the problem. Needs the ``{env: ...}`` variables set (Dagster resolves them).
    """
    dagster_instance_config(str(path.parent), path.name)  # raises on any top-level error
    config = yaml.safe_load(path.read_text())
    outcome = {}
    for section in CLASS_SECTIONS:
        if section not in config:
            continue
        block = config[section]
        name = f"{block['module']}.{block['class']}"
        try:
            cls = getattr(importlib.import_module(block["module"]), block["class"])
        except ModuleNotFoundError as exc:
            outcome[name] = f"not installed: {exc.name}"
            continue
        result = process_config(convert_potential_field(cls.config_type()).config_type, block.get("config") or {})
        assert result.success, f"{path.name} {section} ({name}): {[e.message for e in result.errors]}"
        outcome[name] = "validated"
    return outcome


@pytest.fixture
def example_env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXTERNAL)


@pytest.mark.parametrize("name", sorted(EXTERNAL))
def test_example_is_a_valid_instance_config(name, example_env):
    outcome = validate_example(EXAMPLES / name)
    assert outcome["dagster._core.run_coordinator.QueuedRunCoordinator"] == "validated"
    unchecked = {cls: why for cls, why in outcome.items() if why != "validated"}
    package = EXTERNAL[name]
    if package is None or importlib.util.find_spec(package) is not None:
        assert unchecked == {}, unchecked
    else:
        # honest about the gap: only the launcher of the package we do not install is unchecked
        assert list(unchecked.values()) == [f"not installed: {package}"], unchecked


def test_examples_share_the_tested_storage_and_queue_limits():
    """The k8s and celery files use the Postgres example's storage block, which runs for real."""
    examples = {p.name: yaml.safe_load(p.read_text()) for p in EXAMPLES.glob("*.yaml")}
    storage = examples["dagster-postgres.yaml"]["storage"]
    assert storage["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    for name, config in examples.items():
        assert config["storage"] == storage, name
        queue = config["run_coordinator"]["config"]
        (limit,) = queue["tag_concurrency_limits"]
        assert limit["key"] == "retrain/retraining" and limit["value"] == {"applyLimitPerUniqueValue": True}, name
        assert limit["limit"] >= 1 and limit["limit"] <= queue["max_concurrent_runs"], name


def test_a_broken_example_is_refused(tmp_path, example_env):
    """The check is real: a misspelt queue option and a storage without its database are errors."""
    config = yaml.safe_load((EXAMPLES / "dagster-postgres.yaml").read_text())
    config["run_coordinator"]["config"]["max_concurent_runs"] = 2
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(AssertionError, match="max_concurent_runs"):
        validate_example(tmp_path / "dagster.yaml")
    config = yaml.safe_load((EXAMPLES / "dagster-postgres.yaml").read_text())
    del config["storage"]["postgres"]["postgres_db"]["db_name"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(dg.DagsterInvalidConfigError, match="db_name"):
        validate_example(tmp_path / "dagster.yaml")


def test_the_guides_executor_pattern_merges_with_the_demo_definitions():
    """docs/deployment.md attaches an executor (k8s_job_executor, celery_executor) to the code
    location by merging Definitions; checked here with Dagster's in_process_executor."""
    import dagster_project.definitions as location

    base = dg.load_from_defs_folder(path_within_project=Path(location.__file__).parent)
    merged = dg.Definitions.merge(base, dg.Definitions(executor=dg.in_process_executor))
    repository = merged.get_repository_def()
    assert repository.get_implicit_global_asset_job_def().executor_def is dg.in_process_executor
    assert merged.resolve_sensor_def("churn_change_sensor") is not None
