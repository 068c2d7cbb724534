"""``model_bundle`` per update: the heatmap image and the numbers Dagster's Plots tab draws.

Read back from the instance's materializations after real runs: how many partitions an update
retrained, skipped and rejected, the training seconds it avoided (matching the model store), and
a PNG heatmap embedded as markdown whose outline marks exactly the retrained cells.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import polars as pl
from dagster import AssetKey, AssetRecordsFilter, FloatMetadataValue, IntMetadataValue
from PIL import Image

from retrain_plugins.dagster.charts import RETRAINED_COLOR, heatmap_png
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


def _png(metadata) -> Image.Image:
    markdown = metadata["holdout_heatmap"].value
    found = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:200]
    data = base64.b64decode(found.group(1))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert("RGB")


def _numbers(metadata) -> dict:
    # numbers, not text: the Plots tab draws int and float metadata only
    assert all(isinstance(metadata[n], (IntMetadataValue, FloatMetadataValue)) for n in NUMBERS)
    return {n: metadata[n].value for n in NUMBERS}


def _outlined(image: Image.Image) -> np.ndarray:
    """Mask of the pixels drawn in the retrained outline colour."""
    rgb = np.asarray(image).astype(int)
    target = np.array([int(RETRAINED_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(rgb - target).sum(axis=2) < 30


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
    image = _png(bundle)
    assert image.size[0] >= 700 and image.size[1] >= 350
    assert _outlined(image).sum() > 200  # the cell's outline (and the legend's swatch)

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


def test_the_outline_sits_on_the_retrained_cell():
    windows, cohorts = ["2025-01-01", "2025-02-01", "2025-03-01"], ["east", "north", "south", "west"]
    values = {PartitionKey(w, c): 0.5 + 0.1 * i - 0.05 * j for i, w in enumerate(windows) for j, c in enumerate(cohorts)}

    def outline(key: PartitionKey) -> tuple[int, int, int, int]:
        image = Image.open(io.BytesIO(heatmap_png(values, windows, cohorts, "AUC", True, retrained=[key])))
        mask = _outlined(image.convert("RGB"))
        mask[int(mask.shape[0] * 0.88) :] = False  # leave out the legend strip at the bottom
        ys, xs = np.nonzero(mask)
        return xs.min(), xs.max(), ys.min(), ys.max()

    first = outline(PartitionKey("2025-01-01", "east"))  # left column, top row
    last = outline(PartitionKey("2025-03-01", "west"))  # right column, bottom row
    assert first[1] < last[0] and first[3] < last[2]
    # one cell: the outline spans about a third of the plot's width and a quarter of its height
    width, height = first[1] - first[0], first[3] - first[2]
    assert abs((last[1] - last[0]) - width) <= 3 and abs((last[3] - last[2]) - height) <= 3
    assert 2.5 * width < last[1] - first[0] < 3.5 * width and 3.5 * height < last[3] - first[2] < 4.5 * height


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
