"""``retrain materialize --all`` and ``retrain tick [--launch]`` as subprocesses on a real DAGSTER_HOME instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, RunsFilter

from retrain_plugins.changes.state import read_requests
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import DemoConfig, generate
from retrain_plugins.feast_store import apply_feature_repo
from retrain_plugins.layout import model_store, state_path
from retrain_plugins.partitions import PartitionKey
from retrain_plugins.spec import RetrainingSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
RETRAIN = str(Path(sys.executable).with_name("retrain"))
CONFIG = DemoConfig(n_customers=60, months=3)
ASSETS = ("training_set", "sub_model", "fallback_model", "model_bundle", "online_features")


class Cli:
    def __init__(self, root: Path):
        self.root, self.home, self.spec_file = root, root / "dagster_home", root / "retraining.yaml"

    def __call__(self, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
        env = {**os.environ, "DAGSTER_HOME": str(self.home)}
        env.pop("RETRAIN_SPEC", None)
        command = [RETRAIN, args[0], "--spec", str(self.spec_file), *args[1:]]
        return subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)

    @property
    def spec(self) -> RetrainingSpec:
        return RetrainingSpec.from_yaml(self.spec_file)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project with dynamic cohorts, built by one ``retrain materialize --all`` (its result kept)."""
    root = tmp_path_factory.mktemp("cli_tick")
    shutil.copytree(REPO_ROOT / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml").read_text())["attributes"]
    raw.update(feature_repo="feature_repo", data_dir="data", dynamic_cohorts=True, retrieval="duckdb_asof")
    raw["windows"]["end"] = "2025-04-01"
    raw["trainer"]["params"] = {"iterations": 25, "depth": 4}
    raw["gate"] = {"enabled": False}
    cli = Cli(root)
    cli.spec_file.write_text(yaml.safe_dump(raw))
    cli.home.mkdir()
    (cli.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    generate(root / "data", CONFIG)
    apply_feature_repo(cli.spec.feature_repo, in_process=True)
    return cli, cli("materialize", "--all")


def test_materialize_all_builds_every_asset_in_one_run(built):
    cli, done = built
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("run ")]
    run_id = line.split()[1].rstrip(":")
    assert line == f"run {run_id}: success in {line.split(' in ')[1].split()[0]} s (12 partitions; {', '.join(ASSETS)})"
    progress = done.stderr.splitlines()
    assert "materializing churn: 12 partition(s) (3 windows x 4 cohorts) and the serving assets, one run" in progress
    assert "training sets 12/12" in progress and "sub-models 12/12 (trained 12)" in progress
    for step in ("churn__train", "churn__fallback_model", "churn__model_bundle", "churn__online_features"):
        assert f"step {step}: started" in progress and any(p.startswith(f"step {step}: done in ") for p in progress)
    # Progress goes around the run's log capture (whose echo can drop a run's last lines); what
    # Feast printed is in the run's captured stderr as well as on the command's.
    (captured,) = (cli.home / "storage" / run_id / "compute_logs").glob("*.err")
    assert "customer_profile_fv" in captured.read_text() and "customer_profile_fv" in done.stderr
    assert "step churn__train: started" not in captured.read_text()
    with cli.instance() as instance:
        (run,) = instance.get_runs()
        assert run.run_id == run_id
        for name in ASSETS:
            records = instance.fetch_materializations(AssetKey(["churn", name]), limit=100).records
            assert {r.run_id for r in records} == {run_id}, name
            assert len(records) == (12 if name in ("training_set", "sub_model") else 1), name
    # The online store is loaded: an entity with no label row is scored with the cohort given;
    # the other entity's cohort comes from its newest label row (its --cohorts entry left empty).
    scored = cli("predict", "--entities", "424242,1", "--cohorts", "west,")
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:4] for line in scored.stdout.splitlines() if line.split()[:1] in (["424242"], ["1"])}
    assert rows["424242"] == ["west", "2025-03-01/west", "own_sub_model"]
    assert rows["1"][2] == "own_sub_model" and rows["1"][1] == f"2025-03-01/{rows['1'][0]}"


def test_tick_prints_the_requests_and_launch_runs_exactly_those(built):
    cli, done = built
    assert done.returncode == 0, done.stderr[-3000:]
    assert cli("tick", "--launch").stdout == "churn_change_sensor: no run requested: no partition changed (11 changed file(s) of 11, 12 cell(s) re-fingerprinted)\n"
    before = model_store(cli.spec).entries()
    scenarios.edit_rows(cli.root / "data", "2025-02", "east")
    scenarios.new_cohort(CONFIG, cli.root / "data", "central", months=2)
    requests = [
        "churn_change_sensor: 3 partition(s) in 2 run(s)",
        "new cohort partitions: ['central']",
        "run churn:1:0: 1 partition(s) 2025-02-01/east .. 2025-02-01/east; assets training_set, sub_model, fallback_model, model_bundle, online_features",
        "  partition        reason       detail                                    ",
        "  ---------------  -----------  ------------------------------------------",
        "  2025-02-01/east  edited_rows  32 rows in 2025-02-01..2025-02-01 (was 32)",
        "run churn:1:1: 2 partition(s) 2025-02-01/central .. 2025-03-01/central; assets training_set, sub_model, fallback_model, model_bundle, online_features",
        "  partition           reason      detail                           ",
        "  ------------------  ----------  ---------------------------------",
        "  2025-02-01/central  new_cohort  32 rows in 2025-02-01..2025-02-01",
        "  2025-03-01/central  new_cohort  32 rows in 2025-03-01..2025-03-01",
    ]
    dry = "dry run (a copy of the sensor's state; nothing recorded, nothing launched): `retrain tick --launch` runs them"
    for _ in range(2):  # a dry run records nothing: the same requests, the same reasons, every time
        shown = cli("tick")
        assert shown.returncode == 0, shown.stderr[-3000:]
        assert shown.stdout.splitlines() == [*requests, dry]
    assert read_requests(state_path(cli.spec), 1) == []
    assert not (cli.root / "data" / "requests").exists()
    with cli.instance() as instance:
        assert instance.get_dynamic_partitions("churn_cohort") == ["east", "north", "south", "west"]

    launched = cli("tick", "--launch")
    assert launched.returncode == 0, launched.stderr[-3000:]
    lines = launched.stdout.splitlines()
    assert lines[: len(requests)] == requests
    run_lines = lines[len(requests):]
    assert [line.split()[2] for line in run_lines] == ["(churn:1:0):", "(churn:1:1):"]
    assert all(" success in " in line for line in run_lines)
    run_ids = [line.split()[1] for line in run_lines]
    assert "training sets 2/2" in launched.stderr.splitlines() and "sub-models 1/1 (trained 1)" in launched.stderr.splitlines()

    expected = [{PartitionKey("2025-02-01", "east")}, {PartitionKey("2025-02-01", "central"), PartitionKey("2025-03-01", "central")}]
    with cli.instance() as instance:
        assert instance.get_dynamic_partitions("churn_cohort") == ["east", "north", "south", "west", "central"]
        records = instance.fetch_materializations(AssetKey(["churn", "sub_model"]), limit=100).records
        for run_id, keys in zip(run_ids, expected):
            run = instance.get_run_by_id(run_id)
            assert run.tags["dagster/run_key"] in ("churn:1:0", "churn:1:1") and run.tags["dagster/sensor_name"] == "churn_change_sensor"
            assert {PartitionKey.from_dagster(r.partition_key) for r in records if r.run_id == run_id} == keys
        assert len(instance.get_runs(RunsFilter(tags={"retrain/seq": "1"}))) == 2
    after = model_store(cli.spec).entries()
    changed = {k for k in after if (before.get(k) or {}).get("sha256") != after[k]["sha256"]}
    assert changed == set().union(*expected)
    assert cli("tick").stdout.startswith("churn_change_sensor: no run requested: no partition changed")
