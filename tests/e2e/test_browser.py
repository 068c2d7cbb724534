"""In a real browser: headless Chromium on the running webserver's asset graph and partitions page.

Debian's Chromium (``/usr/bin/chromium``, installed by the ``chromium`` fixture when missing),
driven by Playwright with a fresh profile; Playwright never downloads a browser. The pages are
checked for what a user reads (partition status counts, a partition's metadata, the bundle's
heatmap image and its numbers over updates, the sensor's observation of an edited partition, the
same values the GraphQL API returns) and saved as screenshots: to a temporary folder, or to the folder named by
``RETRAIN_SCREENSHOTS`` (``make screenshots`` refreshes the README's ``docs/screenshots/``), so a
plain test run never edits tracked files. These tests run after
the webserver tests (see ``conftest.py``), so the screenshots show the state they leave: a
backfilled range and a partition retrained by the change sensor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dagster_dev import BUNDLE, LOCATION
from .graphql import SET_NUX_SEEN

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
expect = playwright_api.expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 90_000  # first loads compile nothing, but the asset health queries take a while under load
# Playwright's assertions have a timeout of their own (5 s), which page.set_default_timeout does not
# change: under the load of `make test` (both suites on 2 cores) the asset graph's health line took longer.
expect.set_options(timeout=UI_TIMEOUT_MS)
PARTITION = "south|2025-02-01"  # the partition the sensor test edits; any partition works on its own


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where screenshots go: ``$RETRAIN_SCREENSHOTS`` if set, else a temporary folder."""
    folder = Path(os.environ["RETRAIN_SCREENSHOTS"]) if os.environ.get("RETRAIN_SCREENSHOTS") else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(served, chromium, tmp_path_factory) -> Iterator:
    """A page in headless Chromium with a fresh profile (``--user-data-dir``), 1440x900."""
    served.graphql.execute(SET_NUX_SEEN)  # no "Join the Dagster community" dialog over the pages
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _health_text(stats: dict[str, int]) -> str:
    """The asset graph's partition health line: "N% filled", plus " (k failed)" when any failed."""
    filled = f"{stats['numMaterialized'] * 100 // stats['numPartitions']}% filled"
    return f"{filled} ({stats['numFailed']} failed)" if stats["numFailed"] else filled


def _metadata_cell(page, label: str):
    """The value cell of a metadata table row whose label cell is exactly ``label``."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True))
    return row.get_by_role("cell").nth(1)


def test_asset_graph_shows_the_retraining_and_its_partition_health(served, page, screenshots):
    stats = [served.graphql.partition_stats(["churn", name]) for name in ("training_set", "sub_model")]
    page.goto(f"{served.url}/locations/{LOCATION}/asset-groups/churn", wait_until="domcontentloaded")
    expect(page.get_by_text("Asset Group in", exact=False)).to_be_visible()
    for name in ("training_set", "sub_model", "model_bundle"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    # both partitioned assets (3 months x 4 cohorts each) show their health, worded as the UI words it
    assert [s["numPartitions"] for s in stats] == [12, 12]
    health = [_health_text(s) for s in stats]
    for text in set(health):
        expect(page.get_by_text(text, exact=True)).to_have_count(health.count(text))
    expect(page.get_by_text("Loading...")).to_have_count(0)
    page.screenshot(path=str(screenshots / "asset_graph.png"))


def test_sub_model_partitions_page_shows_status_and_metadata(served, page, screenshots):
    cohort, window = PARTITION.split("|")
    newest = max(served.graphql.materializations(["churn", "sub_model"], [PARTITION]), key=lambda m: m["timestamp_ms"])
    meta = newest["metadata"]

    stats = served.graphql.partition_stats(["churn", "sub_model"])
    missing = stats["numPartitions"] - stats["numMaterialized"] - stats["numFailed"] - stats["numMaterializing"]

    page.goto(f"{served.url}/assets/churn/sub_model?view=partitions", wait_until="domcontentloaded")
    # the status filter counts, as the instance has them (12 materialized after a clean run)
    expect(page.get_by_text(f"{stats['numPartitions']} Partitions Selected", exact=True)).to_be_visible()
    for label, count in (("Materialized", stats["numMaterialized"]), ("Failed", stats["numFailed"]),
                         ("Materializing", stats["numMaterializing"]), ("Missing", missing)):  # fmt: skip
        expect(page.get_by_text(f"{label} ({count})", exact=True)).to_be_visible()
    page.get_by_text(cohort, exact=True).first.click()
    page.get_by_text(window, exact=True).first.click()
    expect(page.get_by_text(PARTITION, exact=True).first).to_be_visible()

    # the UI shows the metadata the run recorded, the same values the GraphQL API returns
    expect(_metadata_cell(page, "partition")).to_have_text(f"{window}/{cohort}")
    expect(_metadata_cell(page, "reason")).to_have_text(meta["reason"])
    expect(_metadata_cell(page, "rows")).to_have_text(str(meta["rows"]))
    expect(_metadata_cell(page, "fingerprint")).to_have_text(meta["fingerprint"])
    expect(_metadata_cell(page, "status")).to_have_text("trained")
    expect(page.get_by_text(newest["run_id"][:8], exact=True).first).to_be_visible()  # the run that wrote it
    page.screenshot(path=str(screenshots / "sub_model_partition.png"))


def _value_cell(page, label: str):
    """The value cell (the last one) of an asset overview's metadata row labelled ``label``."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True))
    return row.get_by_role("cell").last


def test_model_bundle_shows_the_heatmap_and_the_numbers_of_its_last_update(served, page, screenshots):
    newest = max(served.graphql.materializations(BUNDLE), key=lambda m: m["timestamp_ms"])
    meta = newest["metadata"]
    assert meta["holdout_heatmap"] == "MarkdownMetadataEntry"  # an image embedded in markdown
    assert meta["partitions_retrained"] == len(meta["retrained_partitions"]) >= 1
    assert meta["partitions_retrained"] + meta["partitions_skipped"] == meta["sub_models"]

    page.goto(f"{served.url}/assets/{'/'.join(BUNDLE)}", wait_until="domcontentloaded")
    for label in ("partitions_retrained", "partitions_skipped", "partitions_rejected", "partitions_failed"):
        expect(_value_cell(page, label)).to_have_text(str(meta[label]))
    _value_cell(page, "holdout_heatmap").get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    image = dialog.get_by_role("img", name="holdout AUC per window x cohort")
    expect(image).to_be_visible()
    # the browser decoded the PNG at its full size (a broken data URL has no natural width)
    assert image.evaluate("img => img.complete ? img.naturalWidth : 0") >= 700
    dialog.screenshot(path=str(screenshots / "model_bundle_heatmap.png"))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)

    # the same numbers over the bundle's materializations, drawn by the metadata's Plots view
    page.get_by_role("button", name=re.compile(r"\bPlots$")).first.click()  # the Table/Plots toggle
    for label in ("partitions_retrained", "partitions_skipped", "training_seconds_avoided"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    title = page.get_by_text("partitions_retrained", exact=True).first
    title.evaluate("e => e.scrollIntoView({block: 'start'})")  # the savings plots below it in view
    page.screenshot(path=str(screenshots / "model_bundle_plots.png"))


def test_training_set_events_show_what_the_sensor_observed_before_the_run(served, page, screenshots):
    """The change sensor's observation of the edited partition: its reason and data version, in the
    asset's event list next to the materialization of the run it requested.

    After the webserver tests (the package's order) the daemon's tick observed their edit and the
    run trained it; run alone, this test edits the partition and ticks in-process itself.
    """
    observed = _latest_observation(served, PARTITION)
    if observed is None:
        from dagster import DagsterInstance

        from retrain_plugins.dagster.execution import tick
        from retrain_plugins.demo import scenarios

        project = served.project
        with DagsterInstance.from_config(str(served.server.home)) as instance:
            tick(project.defs, project.sensor, instance)  # a new sensor state: observes nothing
            scenarios.edit_rows(project.data, "2025-02", PARTITION.split("|")[0])
            assert tick(project.defs, project.sensor, instance).run_requests
        observed = _latest_observation(served, PARTITION)
    assert observed is not None and observed["metadata"]["reason"] == "edited_rows"
    assert observed["tags"]["dagster/data_version"] == observed["metadata"]["fingerprint"]
    materialized = served.graphql.materializations(["churn", "training_set"], [PARTITION])
    for later in [m for m in materialized if m["timestamp_ms"] > observed["timestamp_ms"]]:
        assert later["metadata"]["fingerprint"] == observed["metadata"]["fingerprint"]  # the run trained what was seen

    page.goto(f"{served.url}/assets/churn/training_set?view=events", wait_until="domcontentloaded")
    item = page.locator("[data-index]").filter(has=page.get_by_role("img", name="observation", exact=True))
    item.filter(has_text=PARTITION).first.click()
    expect(page.get_by_text(f"Partition {PARTITION} observed", exact=True)).to_be_visible()
    for label in ("reason", "detail", "fingerprint", "previous_fingerprint"):
        expect(_metadata_cell(page, label)).to_have_text(str(observed["metadata"][label]))
    expect(_metadata_cell(page, "requested")).to_have_text("true")
    page.screenshot(path=str(screenshots / "training_set_observation.png"))


OBSERVATIONS = """query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { __typename
  ... on Asset { assetObservations(partitions: $partitions) { partition timestamp tags { key value }
    metadataEntries { __typename label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue intRepr }
      ... on BoolMetadataEntry { boolValue } } } }
  ... on Error { message } } }"""


def _latest_observation(served, partition: str) -> dict | None:
    from .graphql import metadata_values

    data = served.graphql.execute(OBSERVATIONS, {"key": {"path": ["churn", "training_set"]}, "partitions": [partition]})
    found = [
        {"timestamp_ms": float(o["timestamp"]), "tags": {t["key"]: t["value"] for t in o["tags"]},
         "metadata": metadata_values(o["metadataEntries"])}
        for o in data["assetOrError"]["assetObservations"]
    ]  # fmt: skip
    return max(found, key=lambda o: o["timestamp_ms"]) if found else None


def test_observation_query_is_valid_against_the_installed_dagster_schema():
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    assert [e.message for e in validate(create_schema().graphql_schema, parse(OBSERVATIONS))] == []
