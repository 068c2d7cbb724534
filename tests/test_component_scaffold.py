"""The scaffolded defs.yaml: every attribute in it, valid once two values are filled in, defaults true.

These read the text ``dg scaffold defs`` writes (``defs_yaml_text``) without starting ``dg``;
tests/test_dg.py runs the real command.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from retrain_plugins.dagster.component import retraining_from_defs_yaml, spec_from_defs_yaml
from retrain_plugins.dagster.component_scaffold import TO_FILL_IN, defs_yaml_text
from retrain_plugins.errors import SpecError
from retrain_plugins.spec import RetrainingSpec

FILLED = {"feature_service": "churn_model_v1", "labels.path": "sources/labels/*/*.parquet"}
COMMENTED_KEY = re.compile(r"^(\s*)# (\w+):( |$)")


def _fill(text: str, values: dict[str, str]) -> str:
    """What a user does: type the two values over the scaffold's empty strings."""
    for dotted, value in values.items():
        leaf = dotted.rsplit(".", 1)[-1]
        text, count = re.subn(rf'^(\s*){leaf}: ""', rf"\g<1>{leaf}: {value}", text, count=1, flags=re.M)
        assert count == 1, dotted
    return text


def _uncomment_keys(text: str) -> str:
    """Every commented-out attribute switched on (descriptions stay comments)."""
    return "\n".join(COMMENTED_KEY.sub(r"\1\2:\3", line) for line in text.splitlines()) + "\n"


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        out.append(f"{prefix}{name}")
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.extend(_paths(kind, f"{prefix}{name}."))
    return out


def _flatten(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict) and key not in ("params", "options", "entity_columns", "strategy_overrides", "mlflow", "translation"):
            out.extend(_flatten(value, f"{prefix}{key}."))
    return out


@pytest.fixture
def scaffolded(tmp_path) -> tuple[Path, str]:
    folder = tmp_path / "project" / "defs" / "churn2"
    folder.mkdir(parents=True)
    return folder / "defs.yaml", defs_yaml_text("churn2", "../../feature_repo", "../../data", today=date(2026, 5, 17))


def test_filled_in_it_is_a_valid_retraining(scaffolded):
    path, text = scaffolded
    path.write_text(_fill(text, FILLED))
    spec = spec_from_defs_yaml(path)
    root = path.parents[2]
    assert (spec.name, spec.feature_service, spec.labels.path) == ("churn2", "churn_model_v1", "sources/labels/*/*.parquet")
    assert spec.feature_repo == root / "feature_repo" and spec.data_dir == root / "data"
    assert spec.dynamic_cohorts and spec.windows.start == date(2026, 1, 1)


def test_left_as_scaffolded_it_names_what_to_fill_in(scaffolded):
    path, text = scaffolded
    path.write_text(text)
    with pytest.raises(SpecError) as failed:
        spec_from_defs_yaml(path)
    lines = {n: i + 1 for i, line in enumerate(text.splitlines()) for n in TO_FILL_IN if re.match(rf'\s*{n.rsplit(".")[-1]}: ""', line)}
    for dotted in TO_FILL_IN:
        assert f"attributes.{dotted} at {path}:{lines[dotted]} is empty" in str(failed.value)
    path.write_text(_fill(text, {"labels.path": FILLED["labels.path"]}))
    with pytest.raises(SpecError, match=r"attributes\.feature_service at .* is empty: Feast feature service") as failed:
        spec_from_defs_yaml(path)
    assert "labels.path" not in str(failed.value)


def test_every_attribute_is_in_it_and_the_commented_defaults_are_the_defaults(scaffolded, monkeypatch):
    """Switching every commented-out attribute on gives the same retraining: they show the defaults."""
    path, text = scaffolded
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.db")  # the mlflow: example's template
    filled = _fill(text, FILLED)
    every = yaml.safe_load(_uncomment_keys(filled))["attributes"]
    assert _flatten(every) == [
        *_paths(RetrainingSpec), "sensor_interval_seconds", "in_process_executor", "mlflow", "translation"
    ]  # fmt: skip
    assert "post_processing:" in text  # Dagster's own, shown in the header
    path.write_text(filled)
    as_scaffolded = spec_from_defs_yaml(path)
    path.write_text(_uncomment_keys(filled))
    assert spec_from_defs_yaml(path) == as_scaffolded
    _, resources = retraining_from_defs_yaml(path)
    assert resources["churn2_mlflow"].tracking_uri == "sqlite:////tmp/mlflow.db"


def test_the_scaffolder_writes_paths_relative_to_the_new_folder(tmp_path, monkeypatch):
    """Defaults <project>/feature_repo and <project>/data; --feature-repo/--data-dir relative to where dg runs
    (absolute ones kept)."""
    import dagster as dg

    from retrain_plugins.dagster.component_scaffold import RetrainingScaffolder, ScaffoldParams

    root = tmp_path / "project"
    (root / "pkg" / "defs" / "ml" / "churn-2").mkdir(parents=True)
    monkeypatch.chdir(root)

    def scaffold(folder: Path, params: ScaffoldParams) -> str:
        request = dg.ScaffoldRequest(
            type_name="retrain_plugins.dagster.component.RetrainingComponent", target_path=folder,
            scaffold_format="yaml", project_root=root, params=params,
        )  # fmt: skip
        RetrainingScaffolder().scaffold(request)
        return (folder / "defs.yaml").read_text()

    text = scaffold(root / "pkg" / "defs" / "ml" / "churn-2", ScaffoldParams())
    assert "  name: churn_2\n" in text  # a valid retraining name from the folder's
    assert "  feature_repo: ../../../../feature_repo\n" in text and "  data_dir: ../../../../data\n" in text
    (root / "pkg" / "defs" / "other").mkdir()
    text = scaffold(root / "pkg" / "defs" / "other", ScaffoldParams(feature_repo="repos/churn", data_dir="/srv/data"))
    assert "  feature_repo: ../../../repos/churn\n" in text and "  data_dir: /srv/data\n" in text
