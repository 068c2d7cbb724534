"""What a detection pass reports: each changed partition with its reason, and the pass itself.

:func:`retrain_plugins.changes.detector.detect_changes` builds a :class:`ChangeReport`; the sensor
turns its :class:`PartitionChange` list into run requests, observations and its tick message.
"""

from __future__ import annotations

import dataclasses

from retrain_plugins.partitions import PartitionKey
from retrain_plugins.sources import FileProblem

REASONS = ("new_data", "late_data", "edited_rows", "drift", "new_cohort", "definition_change", "repair", "retry", "manual")
DEFINITION = "definition"


@dataclasses.dataclass(frozen=True)
class PartitionChange:
    partition: PartitionKey
    reason: str
    fingerprint: str
    rows: int
    detail: str


@dataclasses.dataclass(frozen=True)
class Observed:
    """A partition whose training-set fingerprint, as the sensor computes it, changed this pass.

    ``previous`` is the fingerprint of the cells observed before this pass (``EMPTY`` for a
    partition first seen now): comparing it with ``fingerprint`` is what made it an observation,
    whatever its sub-model was trained on.
    """

    fingerprint: str
    previous: str
    rows: int


@dataclasses.dataclass
class ChangeReport:
    """What one detection pass found; ``commit()`` records the state it was computed from."""

    changes: list[PartitionChange]
    changed_files: list[str]
    changed_sources: list[str]  # "labels" and/or feature view names whose files changed
    unreadable: dict[str, str]
    new_cohorts: list[str]
    vanished_cohorts: list[str]
    stale_by_definition: int
    files_seen: int
    cells_joined: int = 0  # (window, cohort) cells re-fingerprinted with the feature join this pass
    # changed label file -> why some of its rows are not trained (a blank cohort: no partition)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    # unreadable files with their source (labels or a feature view) and the column(s) at fault
    file_problems: tuple[FileProblem, ...] = ()
    # partitions whose fingerprint differs from the one of the cells observed before this pass
    observed: dict[PartitionKey, Observed] = dataclasses.field(default_factory=dict)
    _commit: list = dataclasses.field(default_factory=list, repr=False)

    def commit(self) -> None:
        """Record what this pass saw; call inside ``StateStore.transaction()`` with the rest of the tick."""
        for step in self._commit:
            step()
        self._commit = []
