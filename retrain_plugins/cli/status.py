"""Per-partition status: what serves, what was skipped, what was never trained."""

from __future__ import annotations

from retrain_plugins.changes.detector import state_store
from retrain_plugins.layout import model_store_root
from retrain_plugins.partitions import all_partitions
from retrain_plugins.spec import RetrainingSpec
from retrain_plugins.store import ModelStore

HEADERS = ("window", "cohort", "state", "rows", "auc_holdout", "reason", "trained_by_run")


def status_rows(spec: RetrainingSpec) -> list[tuple]:
    entries = ModelStore(model_store_root(spec)).entries()
    trained = state_store(spec).trained()
    rows = []
    for key in all_partitions(spec):
        entry, record = entries.get(key), trained.get(key)
        state = record.status if record else "never trained"
        rows.append(
            (
                key.window,
                key.cohort,
                state,
                record.rows if record else None,
                entry.get("auc_holdout") if entry else None,
                entry.get("reason") if entry else None,
                (record.run_id or "")[:8] if record else None,
            )
        )
    return rows
