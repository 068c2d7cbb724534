"""``model_bundle`` per update: the heatmap image and the numbers Dagster's Plots tab draws.

Read back from the instance's materializations after real runs: how many partitions an update
retrained, skipped and rejected, the training seconds it avoided (matching the model store), and
an SVG heatmap embedded as markdown whose outline marks exactly the retrained cells (the browser
test in tests/e2e checks the Dagster UI shows it).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import polars as pl
from dagster import AssetKey, AssetRecordsFilter, FloatMetadataValue, IntMetadataValue

from retrain_plugins.dagster.charts import REJECTED_COLOR, RETRAINED_COLOR, heatmap_svg
from retrain_plugins.dagster.execution import execute, materialize_all, tick
from retrain_plugins.demo import scenarios
from retrain_plugins.demo.generate import write_parquet
from retrain_plugins.partitions import PartitionKey

BUNDLE = AssetKey(["churn", "model_bundle"])
NUMBERS = ("partitions_retrained", "partitions_skipped", "partitions_rejected", "partitions_failed",
           "training_seconds", "training_seconds_avoided")  # fmt: skip


def _bundles(instance) -> list[dict]:
    """Metadata of every ``model_bundle`` materialization, oldest first."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=BUNDLE), limit=100, ascending=True).records
    return [dict(r.asset_materialization.metadata) for r in records]


SVG = "{http://www.w3.org/2000/svg}"


def _svg(metadata) -> ET.Element:
    markdown = metadata["holdout_heatmap"].value
    found = re.fullmatch(r"!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:200]
    return ET.fromstring(base64.b64decode(found.group(1)))  # well-formed XML, or this raises


def _box(rect: ET.Element) -> tuple[float, float, float, float]:
    x, y = float(rect.get("x")), float(rect.get("y"))
    return x, y, x + float(rect.get("width")), y + float(rect.get("height"))


def _outlined_cells(svg: ET.Element, color: str = RETRAINED_COLOR) -> set[str]:
    """``window | cohort`` of the cells that an outline of ``color`` lies inside."""
    cells = {r.find(f"{SVG}title").text.split(":")[0]: _box(r) for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
    found = set()
    for outline in svg.iter(f"{SVG}rect"):
        if outline.get("class") == "outline" and outline.get("stroke") == color:
            x0, y0, x1, y1 = _box(outline)
            (inside,) = [name for name, (a, b, c, d) in cells.items() if a <= x0 and b <= y0 and x1 <= c and y1 <= d]
            found.add(inside)
    return found


def _numbers(metadata) -> dict:
    # numbers, not text: the Plots tab draws int and float metadata only
    assert all(isinstance(metadata[n], (IntMetadataValue, FloatMetadataValue)) for n in NUMBERS)
    return {n: metadata[n].value for n in NUMBERS}


def test_each_update_records_what_it_retrained_skipped_and_avoided(materialized):
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    scenarios.edit_rows(materialized.data, "2025-02", "south")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))

    (bundle,) = _bundles(materialized.instance)
    key = PartitionKey("2025-02-01", "south")
    models = materialized.models()
    others = sum(e["training_seconds"] for k, e in models.items() if k != key)
    assert _numbers(bundle) == {
        "partitions_retrained": 1,
        "partitions_skipped": 11,
        "partitions_rejected": 0,
        "partitions_failed": 0,
        "training_seconds": round(models[key]["training_seconds"], 3),
        "training_seconds_avoided": round(others, 3),
    }
    assert bundle["retrained_partitions"].value == [str(key)]
    svg = _svg(bundle)
    assert float(svg.get("width")) >= 700 and float(svg.get("height")) >= 300
    assert _outlined_cells(svg) == {"2025-02-01 | south"} and _outlined_cells(svg, REJECTED_COLOR) == set()

    # the next update is another point on the Plots tab: a late row in another partition
    scenarios.late_rows(scenarios.DemoConfig(n_customers=60, months=3), materialized.data, "2025-01", cohorts=("west",))
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    assert all(r.success for r in execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance))
    first, second = _bundles(materialized.instance)
    assert second["retrained_partitions"].value == ["2025-01-01/west"]
    assert _numbers(second)["partitions_retrained"] == 1 and _numbers(second)["partitions_skipped"] == 11


def test_a_rejected_candidate_is_counted_and_outlined_apart(make_project):
    project = make_project(gate={"enabled": True, "tolerance": 0.0})
    assert materialize_all(project.defs, project.spec, project.instance).success
    (full,) = _bundles(project.instance)
    assert _numbers(full)["partitions_retrained"] == 12 and _numbers(full)["partitions_skipped"] == 0
    assert _numbers(full)["training_seconds_avoided"] == 0
    assert tick(project.defs, project.sensor, project.instance).run_requests == []
    # poison north's March training rows (not its holdout): the candidate is worse, the gate refuses it
    path = project.data / "sources/labels/month=2025-03/part-0.parquet"
    frame = pl.read_parquet(path)
    north = frame.filter(pl.col("region") == "north")["label_timestamp"].sort()
    older = (pl.col("region") == "north") & (pl.col("label_timestamp") < north[int(len(north) * 0.7)])
    write_parquet(frame.with_columns(pl.when(older).then(1 - pl.col("churned")).otherwise(pl.col("churned")).alias("churned")), path)
    result = tick(project.defs, project.sensor, project.instance)
    assert all(r.success for r in execute(project.defs, project.spec, result.run_requests, project.instance))
    update = _bundles(project.instance)[-1]
    numbers = _numbers(update)
    assert (numbers["partitions_retrained"], numbers["partitions_rejected"], numbers["partitions_skipped"]) == (0, 1, 12)
    assert numbers["training_seconds"] > 0  # the rejected fit was paid for
    assert update["retrained_partitions"].value == []
    svg = _svg(update)
    assert _outlined_cells(svg, REJECTED_COLOR) == {"2025-03-01 | north"} and _outlined_cells(svg) == set()


def test_the_outline_sits_on_the_retrained_cell_whatever_the_names():
    windows, cohorts = ["2025-01-01", "2025-02-01", "2025-03-01"], ["east", "north & <co>", "süd \"x\"", "west"]
    values = {PartitionKey(w, c): 0.5 + 0.1 * i - 0.05 * j for i, w in enumerate(windows) for j, c in enumerate(cohorts)}
    values[PartitionKey("2025-02-01", "west")] = None  # no sub-model: grey, no number
    for key in (PartitionKey("2025-01-01", "east"), PartitionKey("2025-03-01", "north & <co>")):
        svg = ET.fromstring(heatmap_svg(values, windows, cohorts, "AUC", True, retrained=[key]))
        assert _outlined_cells(svg) == {f"{key.window} | {key.cohort}"}
    cells = {r.find(f"{SVG}title").text: r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
    assert len(cells) == 12 and 'süd "x"' in " ".join(cells)  # odd names escaped, kept
    assert cells["2025-02-01 | west: AUC no sub-model"].get("fill") == "#d9d9d9"
    # better is yellow whatever the direction: the highest AUC, the lowest logloss
    best_auc = cells["2025-03-01 | east: AUC 0.700"].get("fill")
    logloss = ET.fromstring(heatmap_svg(values, windows, cohorts, "logloss", False))
    fills = {r.find(f"{SVG}title").text: r.get("fill") for r in logloss.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None}
    assert best_auc == fills["2025-01-01 | west: logloss 0.350"] == "#fde725"


def test_a_run_with_a_failed_partition_publishes_the_update_with_it_counted(materialized):
    """The training step publishes the bundle itself when a partition fails; the numbers say so."""
    assert tick(materialized.defs, materialized.sensor, materialized.instance).run_requests == []
    labels = materialized.data / "sources/labels/month=2025-02/part-0.parquet"
    frame = pl.read_parquet(labels)
    bad = pl.when(pl.col("region") == "south").then(2).otherwise(pl.col("churned")).alias("churned")  # not 0/1
    write_parquet(frame.with_columns(bad), labels)
    scenarios.edit_rows(materialized.data, "2025-02", "north")
    result = tick(materialized.defs, materialized.sensor, materialized.instance)
    (run,) = execute(materialized.defs, materialized.spec, result.run_requests, materialized.instance, raise_on_error=False)
    assert not run.success
    (update,) = _bundles(materialized.instance)
    assert update["published_by"].value == "training step (some partitions failed)"
    numbers = _numbers(update)
    assert (numbers["partitions_retrained"], numbers["partitions_failed"], numbers["partitions_skipped"]) == (1, 1, 11)
    assert update["retrained_partitions"].value == ["2025-02-01/north"]
