"""The inline asset checks of a training run, over the sub-models that run trained.

``holdout_metric_floor``: each trained sub-model's primary holdout metric within the gate's bound
(``gate.metric_bound`` / ``gate.auc_floor``); ``candidates_promoted``: no candidate rejected by
the gate. Both warn, and both cover the partitions of one run: Dagster's inline checks are not
partition-scoped (partitioned ``@asset_check`` is preview).
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.tasks import PRIMARY

METRIC_CHECK = "holdout_metric_floor"
PROMOTED_CHECK = "candidates_promoted"


def check_specs(sub_model_key: AssetKey) -> list[AssetCheckSpec]:
    """The checks the training step declares on ``sub_model``."""
    return [AssetCheckSpec(name, asset=sub_model_key) for name in (METRIC_CHECK, PROMOTED_CHECK)]


def _metric_check(spec: RetrainingSpec, trained: list[dict], sub_model_key: AssetKey) -> AssetCheckResult:
    """The primary holdout metric of every trained sub-model against ``spec.gate.bound(task)``.

    A minimum for higher-is-better metrics (AUC), a maximum for lower-is-better ones (logloss,
    RMSE); a missing metric (single-class holdout) counts as failing a minimum, as before tasks.
    """
    task = next((r["task"] for r in trained if r.get("task")), "binary" if spec.task == "auto" else spec.task)
    metric = PRIMARY[task]
    bound = spec.gate.bound(task)
    if bound is None:
        off = []
    elif metric.higher_is_better:
        off = [r for r in trained if (r.get("metric_holdout") or 0.0) < bound]
    else:
        off = [r for r in trained if r.get("metric_holdout") is not None and r["metric_holdout"] > bound]
    word = "at least" if metric.higher_is_better else "at most"
    described = "no bound set (gate.metric_bound)" if bound is None else f"{metric.label} {word} {bound}"
    metadata = {
        "metric": metric.name,
        "bound": bound,
        "higher_is_better": metric.higher_is_better,
        "floor": bound if metric.higher_is_better else None,
        "checked": len(trained),
        "outside": MetadataValue.json([f"{r['partition']}: {r.get('metric_holdout')}" for r in off]),
    }
    return AssetCheckResult(
        asset_key=sub_model_key,
        check_name=METRIC_CHECK,
        passed=not off,
        severity=AssetCheckSeverity.WARN,
        metadata={k: v for k, v in metadata.items() if v is not None},
        description=f"{len(trained) - len(off)} of {len(trained)} sub-models in this run: {described}",
    )


def run_checks(spec: RetrainingSpec, results: list[dict], sub_model_key: AssetKey) -> list[AssetCheckResult]:
    """Checks over the partitions this run trained (inline checks are not partition-scoped)."""
    trained = [r for r in results if r["status"] in ("trained", "rejected")]
    rejected = [f"{r['partition']}: {r.get('gate')}" for r in trained if r["status"] == "rejected"]
    return [
        _metric_check(spec, trained, sub_model_key),
        AssetCheckResult(
            asset_key=sub_model_key,
            check_name=PROMOTED_CHECK,
            passed=not rejected,
            severity=AssetCheckSeverity.WARN,
            metadata={"checked": len(trained), "rejected": MetadataValue.json(rejected)},
            description=f"{len(trained) - len(rejected)} of {len(trained)} candidates promoted by the gate",
        ),
    ]
