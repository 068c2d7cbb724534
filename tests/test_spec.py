"""Bad specs fail with a message that names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retrain_plugins import RetrainingSpec, SpecError, check_label_source, load_feature_service_view
from retrain_plugins.trainers import trainer_class

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reads_the_spec_the_code_location_loads():
    from retrain_plugins.cli.main import load_spec, parser

    spec = load_spec(parser().parse_args(["status", "--spec", str(REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml")]))
    assert spec.feature_repo == REPO_ROOT / "feature_repo"
    assert spec.data_dir == REPO_ROOT / "data"
    assert spec.cohorts == ("east", "north", "south", "west")



def test_unknown_feature_service(project):
    spec = project.spec.model_copy(update={"feature_service": "churn_model_v9"})
    with pytest.raises(SpecError, match=r"feature service 'churn_model_v9' is not in the Feast registry.*churn_model_v1"):
        load_feature_service_view(spec)


def test_cohort_column_missing_from_the_data(project):
    labels = project.spec.labels.model_copy(update={"cohort_column": "plan"})
    spec = project.spec.model_copy(update={"labels": labels})
    with pytest.raises(SpecError, match=r"labels.cohort_column 'plan' is not a column of the label source"):
        check_label_source(spec)


def test_missing_registry_says_to_apply(project):
    (project.data / "feast" / "registry.db").unlink()
    spec = project.spec.model_copy(update={"name": "fresh"})
    with pytest.raises(SpecError, match="registry .* does not exist: run `feast"):
        load_feature_service_view(spec)


def test_yaml_errors_name_the_file_and_field(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml").read_text())["attributes"]
    raw["windows"]["lookback"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"bad.yaml.*windows.lookback"):
        RetrainingSpec.from_yaml(path)
    raw["windows"]["lookback"] = 1
    raw["cohorts"] = ["north", "north"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="cohorts must be unique"):
        RetrainingSpec.from_yaml(path)
    raw["cohorts"] = ["north"]
    raw["labelz"] = raw.pop("labels")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="labelz"):
        RetrainingSpec.from_yaml(path)


def test_unknown_trainer_and_wrong_base_class():
    with pytest.raises(SpecError, match=r"unknown trainer 'xgboost'; registered trainers: \['catboost'"):
        trainer_class("xgboost")
    with pytest.raises(SpecError, match="not a retrain_plugins Trainer"):
        trainer_class("collections.OrderedDict")
    assert trainer_class("catboost").name == "catboost"
    assert trainer_class("retrain_plugins.trainers.catboost:CatBoostTrainer").suffix == ".cbm"


def test_strategy_overrides_by_partition_then_cohort():
    from retrain_plugins import TrainerSpec

    trainer = TrainerSpec(strategy="refit", strategy_overrides={"north": "warm_start", "2025-03-01/north": "refit"})
    assert trainer.strategy_for("2025-02-01", "north") == "warm_start"
    assert trainer.strategy_for("2025-03-01", "north") == "refit"
    assert trainer.strategy_for("2025-02-01", "south") == "refit"
    with pytest.raises(ValueError, match="strategy_overrides"):
        TrainerSpec(strategy_overrides={"north": "sometimes"})


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"params": {"iteratoins": 25}}, r"trainer.params are not valid for trainer 'catboost'.*iteratoins"),
        ({"params": {"depth": -3}}, r"trainer.params are not valid for trainer 'catboost'.*[Dd]epth"),
        ({"name": "sklearn_hgb", "params": {"max_iter": 0}}, r"trainer.params are not valid for trainer 'sklearn_hgb'.*max_iter"),
        ({"name": "catbost"}, r"unknown trainer 'catbost'; registered trainers: \['catboost', 'sklearn_hgb'\]"),
        ({"name": "retrain_plugins.trainers.catboost:CatBoostTrainer"}, r"is a dotted path.*trainer.allow_import: true"),
    ],
)
def test_trainer_mistakes_fail_where_definitions_load_and_before_any_tick_records(project, trainer, message):
    from retrain_plugins import build_definitions

    from .helpers import make_spec

    bad = make_spec(project.root, trainer=trainer)
    with pytest.raises(SpecError, match=message):
        build_definitions(bad)
    # The sensor of definitions built before the mistake: the tick fails, nothing is recorded.
    from retrain_plugins.dagster.sensors import build_change_sensor
    from retrain_plugins.dagster.assets import build_retraining_assets
    from retrain_plugins.layout import state_path

    sensor = build_change_sensor(bad, build_retraining_assets(bad))
    from dagster import Definitions, build_sensor_context

    with pytest.raises(SpecError, match=message):
        sensor.evaluate_tick(build_sensor_context(instance=project.instance, definitions=Definitions(sensors=[sensor])))
    assert not state_path(bad).exists() or not sqlite_rows(state_path(bad), "files")


def sqlite_rows(path, table):
    import sqlite3

    with sqlite3.connect(path) as con:
        return con.execute(f"SELECT * FROM {table}").fetchall()


def test_a_dotted_trainer_path_works_when_the_spec_opts_in(project):
    from retrain_plugins import build_definitions
    from retrain_plugins.dagster.execution import materialize_all
    from retrain_plugins.layout import model_store_root
    from retrain_plugins.routing import RoutedModel

    from .helpers import make_spec

    spec = make_spec(
        project.root,
        trainer={"name": "retrain_plugins.trainers.catboost:CatBoostTrainer", "allow_import": True},
    )
    assert spec.definition_version() == make_spec(project.root, trainer={"name": spec.trainer.name}).definition_version()
    defs = build_definitions(spec)
    assert materialize_all(defs, spec, project.instance).success
    model = RoutedModel.load(model_store_root(spec))  # the bundle records the opt-in
    bundle = model.bundle
    bundle["trainer_allow_import"] = False
    with pytest.raises(SpecError, match="is a dotted path"):
        RoutedModel(model.store, bundle)
