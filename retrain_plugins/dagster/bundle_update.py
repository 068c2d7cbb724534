"""What one publication of ``model_bundle`` changed, as numbers and a heatmap for the UI.

Per update (one publication of the bundle): how many sub-models it retrained, how many served on
untouched (*skipped*), how many candidates the gate rejected or failed, the training seconds spent
and avoided. Numbers, so the asset's Plots tab draws them over time. ``retrained`` is read off the
bundles themselves (sub-models routed now and not by the previous bundle: new or replaced), so a
serving-only publication reports what it publishes too; ``rejected`` and ``failed`` are this run's
own sub-model records (Dagster's event log), since a rejected candidate is never routed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, AssetKey, DagsterEventType, MetadataValue

from retrain_plugins.dagster.charts import heatmap_svg, image_markdown
from retrain_plugins.partitions import PartitionKey, windows
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.tasks import PRIMARY


@dataclasses.dataclass(frozen=True)
class BundleUpdate:
    retrained: frozenset[PartitionKey]  # routed sub-models the previous bundle did not route to
    rejected: frozenset[PartitionKey]  # candidates of this run the gate refused (the current model serves)
    failed: frozenset[PartitionKey]  # partitions of this run that failed (unusable data)
    skipped: int  # routed sub-models this update left untouched
    training_seconds: float  # fits of this update: the retrained sub-models and the rejected candidates
    training_seconds_avoided: float  # what refitting the skipped ones would have cost (their last fit)

    def metadata(self) -> dict[str, Any]:
        return {
            "partitions_retrained": len(self.retrained),
            "partitions_skipped": self.skipped,
            "partitions_rejected": len(self.rejected),
            "partitions_failed": len(self.failed),
            "training_seconds": round(self.training_seconds, 3),
            "training_seconds_avoided": round(self.training_seconds_avoided, 3),
        }


def _routed(bundle: Mapping[str, Any] | None) -> dict[PartitionKey, dict[str, Any]]:
    if not bundle:
        return {}
    return {PartitionKey(e["window"], e["cohort"]): e for entries in bundle["routes"].values() for e in entries}


def bundle_update(
    previous: Mapping[str, Any] | None, bundle: Mapping[str, Any], outcomes: Mapping[PartitionKey, Mapping[str, Any]]
) -> BundleUpdate:
    """The update from ``previous`` to ``bundle``; ``outcomes``: what this run recorded per partition."""
    before, now = _routed(previous), _routed(bundle)
    retrained = frozenset(k for k, e in now.items() if k not in before or before[k]["sha256"] != e["sha256"])
    rejected = frozenset(k for k, m in outcomes.items() if m.get("status") == "rejected")
    failed = frozenset(k for k, m in outcomes.items() if m.get("status") == "failed")
    spent = sum(now[k].get("training_seconds") or 0.0 for k in retrained)
    spent += sum(outcomes[k].get("training_seconds") or 0.0 for k in rejected)
    kept = [e for k, e in now.items() if k not in retrained]
    avoided = sum(e.get("training_seconds") or 0.0 for e in kept)
    return BundleUpdate(retrained, rejected, failed, len(kept), spent, avoided)


def run_outcomes(context: AssetExecutionContext, sub_model_key: AssetKey) -> dict[PartitionKey, dict[str, Any]]:
    """What this run recorded for each ``sub_model`` partition: its materializations (trained,
    rejected, skipped) and, for failed partitions, observations."""
    types = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION}
    records = context.instance.get_records_for_run(context.run.run_id, of_type=types).records
    found = {}
    for record in records:
        entry = record.event_log_entry
        event = entry.asset_materialization or entry.asset_observation
        if event is None or event.asset_key != sub_model_key or event.partition is None:
            continue
        found[PartitionKey.from_dagster(event.partition)] = {k: v.value for k, v in event.metadata.items()}
    return found


def update_metadata(spec: RetrainingSpec, bundle: Mapping[str, Any], update: BundleUpdate) -> dict[str, Any]:
    """``model_bundle`` metadata: the update's numbers and the heatmap of the served holdout metric."""
    routed = _routed(bundle)
    task = bundle.get("task") or "binary"
    metric = PRIMARY.get(task, PRIMARY["binary"])
    values = {k: e.get("metric_holdout", e.get("auc_holdout")) for k, e in routed.items()}
    cohorts = sorted({k.cohort for k in routed} | {k.cohort for k in update.rejected | update.failed})
    svg = heatmap_svg(
        values,
        [w.key for w in windows(spec)],
        cohorts,
        metric.label,
        metric.higher_is_better,
        retrained=update.retrained,
        rejected=update.rejected,
        title=(
            f"{spec.name}: holdout {metric.label} of the served sub-models\n{len(update.retrained)} retrained, "
            f"{len(update.rejected)} rejected, {update.skipped} untouched "
            f"({update.training_seconds_avoided:.1f} s of training avoided)"
        ),
    )
    return {
        **update.metadata(),
        "holdout_heatmap": MetadataValue.md(image_markdown(svg, f"holdout {metric.label} per window x cohort")),
        "retrained_partitions": MetadataValue.json(sorted(str(k) for k in update.retrained)),
    }
